"""The GEMM op the kernels share (``torch.ops.lstm_ext.gemm``): one list of
sample inputs (helpers.gemm_samples) drives its correctness against ``a @ b``
and opcheck. It has no autograd formula: the LSTM ops' backward uses it."""
import pytest
import torch

from helpers import gemm_samples, params, tol

op = torch.ops.lstm_ext
SAMPLES = gemm_samples()


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_matches_matmul(sample):
    a, b = sample.args
    torch.testing.assert_close(op.gemm(a, b), a @ b, **tol(sample.dtype))


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_opcheck(sample):
    torch.library.opcheck(op.gemm.default, sample.args)
