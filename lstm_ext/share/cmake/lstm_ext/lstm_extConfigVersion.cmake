# The package's version (kept equal to lstm_ext.__version__ by tests/deploy):
# a request for 0.1 or 0.1.0 is met, one for another major.minor is not.
set(PACKAGE_VERSION "0.1.0")
if(PACKAGE_FIND_VERSION)
  if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  elseif(PACKAGE_FIND_VERSION_MAJOR STREQUAL "0" AND
         NOT PACKAGE_FIND_VERSION_MINOR STREQUAL "1")
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  else()
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
      set(PACKAGE_VERSION_EXACT TRUE)
    endif()
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
