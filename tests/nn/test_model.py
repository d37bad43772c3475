"""LSTMModel (the tutorial's model): the cell stepped then a linear head,
options, the tutorial's state dict."""
import pytest
import torch
from torch import nn

import lstm_ext
from helpers import TutorialCell


def test_tutorial_training_example_shapes():
    model = lstm_ext.LSTMModel(4, 3, 1)
    X = torch.randn(100, 5, 4)
    assert model(X).shape == (100, 1)
    assert model(X[0]).shape == (1,)


def test_model_equals_cell_stepped_then_linear():
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(4, 3, 2, dtype=torch.float64)
    cell = lstm_ext.LSTMCell(4, 3, dtype=torch.float64)
    cell.load_state_dict({k[:-3]: v for k, v in model.lstm.state_dict().items()})
    x = torch.randn(6, 5, 4, dtype=torch.float64)
    h = c = torch.zeros(6, 3, dtype=torch.float64)
    for t in range(5):
        h, c = cell(x[:, t], (h, c))
    torch.testing.assert_close(model(x), model.fc(h))


@pytest.mark.parametrize("kw", [dict(num_layers=2, dropout=0.1), dict(bidirectional=True)])
def test_model_options(kw):
    model = lstm_ext.LSTMModel(4, 3, 2, **kw)
    y = model(torch.randn(8, 5, 4))
    assert y.shape == (8, 2)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tutorial_model_state_dict_loads():
    class TutorialModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm_cell = TutorialCell(4, 3)
            self.fc = nn.Linear(3, 1)

        def forward(self, x):
            h = c = torch.zeros(x.shape[0], 3)
            for t in range(x.shape[1]):
                h, c = self.lstm_cell(x[:, t], (h, c))
            return self.fc(h)

    torch.manual_seed(0)
    tutorial = TutorialModel()
    model = lstm_ext.LSTMModel(4, 3, 1)
    model.load_state_dict(tutorial.state_dict())
    x = torch.randn(10, 5, 4)
    torch.testing.assert_close(model(x), tutorial(x), atol=2e-6, rtol=1e-5)


def test_model_bad_input():
    with pytest.raises(ValueError, match=r"LSTMModel: expected output_size an integer >= 1, "
                                         r"but got -1"):
        lstm_ext.LSTMModel(4, 3, -1)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, input_size\)"):
        lstm_ext.LSTMModel(4, 3, 1)(torch.randn(4))
