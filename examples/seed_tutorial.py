"""The seed tutorial, run on lstm_ext's classes: a cell demo, then training.

Exactly the tutorial's code but for the import: ``X = torch.randn(100, 5, 4)``
is 100 sequences of 5 steps (batch first), and ``model(X)`` is ``(100, 1)``.
"""
import torch
import torch.nn as nn

from lstm_ext import LSTMCell, LSTMModel


def cell_demo() -> None:
    input_size, hidden_size, sequence_length = 4, 3, 5
    cell = LSTMCell(input_size, hidden_size)
    h = torch.zeros(1, hidden_size)
    c = torch.zeros(1, hidden_size)
    input_sequence = torch.randn(sequence_length, 1, input_size)
    for x in input_sequence:
        h, c = cell(x, (h, c))
    print("Final hidden state:", h)
    print("Final cell state:", c)


def train() -> float:
    model = LSTMModel(4, 3, 1)
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    X = torch.randn(100, 5, 4)
    y = torch.randn(100, 1)
    num_epochs = 100
    for epoch in range(num_epochs):
        optimizer.zero_grad()
        outputs = model(X)
        loss = criterion(outputs, y)
        loss.backward()
        optimizer.step()
        if (epoch + 1) % 10 == 0:
            print(f"Epoch [{epoch + 1}/{num_epochs}], Loss: {loss.item():.4f}")
    return loss.item()


if __name__ == "__main__":
    torch.manual_seed(0)
    cell_demo()
    train()
