"""The main job: train an LSTM forecaster on a series, keep the best epoch,
then evaluate it against honest baselines, plot, and export it for deployment
(``run``). Every epoch is checkpointed, so an interrupted run resumes."""
import math
import os
from dataclasses import asdict
from typing import List

import torch
from torch import nn
from tqdm import tqdm

from . import artifacts, evaluation
from .settings import TrainConfig, brief
from .windows import prepare


def _changed_settings(saved: dict, cfg: TrainConfig) -> List[str]:
    """The settings a resumed run may not change (all but epochs and out, which
    names the folder the checkpoint was found in, however spelled)."""
    return [f"{name} {brief(saved[name])}, now {brief(value)}"
            for name, value in asdict(cfg).items()
            if name not in ("epochs", "out") and saved[name] != value]


def run(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Trains with ``cfg`` (from ``cfg.out``'s checkpoint, if ``resume``),
    evaluates, plots and exports into ``cfg.out``; returns what metrics.json
    holds. ``quiet`` prints nothing (no progress bar either)."""
    artifacts.make_out_dir(cfg.out)
    prep = prepare(cfg)
    series = prep.series
    log = (lambda *a: None) if quiet else print
    log(f"data: {series.source} [{series.column}], {len(series)} values"
        + (f", {series.filled} missing filled by interpolation in time" if series.filled else "")
        + f"; split train/val/test = {prep.split.train_end}/"
          f"{prep.split.val_end - prep.split.train_end}/{prep.split.n - prep.split.val_end}")

    torch.manual_seed(cfg.seed)
    model, optimizer, generator = artifacts.training_objects(cfg)
    history: List[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    start_epoch = 0
    ckpt_path = os.path.join(cfg.out, artifacts.CHECKPOINT)
    if resume and os.path.exists(ckpt_path):
        ckpt = artifacts.load_checkpoint(ckpt_path)
        changed = _changed_settings(ckpt["config"], cfg)
        if changed:
            raise ValueError(f"{ckpt_path}: was written with other settings "
                             f"({'; '.join(changed)}); remove it or run without --resume")
        artifacts.restore(ckpt, cfg, model, optimizer, generator)
        history = ckpt["history"]
        best = {"val_loss": ckpt["best_val_loss"], "epoch": ckpt["best_epoch"],
                "state": ckpt["best_state"]}
        start_epoch = ckpt["epoch"]
        log(f"resuming from {ckpt_path} after epoch {start_epoch}")

    x_train, y_train = prep.tensors["train"]
    x_val, y_val = prep.tensors["val"]
    loss_fn = nn.MSELoss()
    epochs = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs,
                  desc="training", unit="epoch", disable=quiet)
    for epoch in epochs:
        if epoch - best["epoch"] >= cfg.patience and best["state"] is not None:
            break
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x_val), y_val).item()
        if not (math.isfinite(total) and math.isfinite(val_loss)):
            if best["state"] is None:
                raise ValueError(f"training diverged in epoch {epoch + 1} (training loss "
                                 f"{total / len(x_train):.3g}, validation loss {val_loss:.3g}); "
                                 "try a smaller --lr")
            log(f"\ntraining diverged in epoch {epoch + 1}; keeping epoch {best['epoch']}, "
                "the best before")
            break
        history.append({"epoch": epoch + 1, "train_loss": total / len(x_train),
                        "val_loss": val_loss})
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch + 1,
                    "state": {k: v.clone() for k, v in model.state_dict().items()}}
        epochs.set_postfix(loss=f"{total / len(x_train):.4f}", val=f"{val_loss:.4f}",
                           best=best["epoch"])
        artifacts.save_checkpoint(ckpt_path, cfg, epoch + 1, model, optimizer, generator,
                                  history, best, prep.scaler.to_dict())
    epochs.close()
    if best["state"] is None:
        raise ValueError("no epoch was trained (check --epochs)")

    # What follows reads the checkpoint back, as forecast and export do.
    ckpt = artifacts.load_checkpoint(ckpt_path)
    forecaster = artifacts.forecaster_from_checkpoint(ckpt)
    metrics = evaluation.evaluate(prep, forecaster, cfg)
    beats = evaluation.report(metrics, best, prep, cfg, log)
    pngs = evaluation.plot(prep, forecaster, cfg, ckpt["history"], cfg.out)
    meta = artifacts.model_meta(cfg, prep.scaler.to_dict(), best["epoch"], series, metrics)
    model_path = artifacts.export(forecaster, meta, cfg.out)
    artifacts.write_last_window(series, cfg.window, cfg.out)
    result = {"metrics": metrics, "beats_baselines": beats, "best_epoch": best["epoch"],
              "epochs_run": len(ckpt["history"]), "filled_missing": series.filled}
    metrics_path = os.path.join(cfg.out, artifacts.METRICS_FILE)
    evaluation.write_metrics(result, metrics_path)
    log(f"\nwrote {metrics_path}, {pngs[0]}, {pngs[1]},\n"
        f"      {model_path} (TorchScript) and {os.path.join(cfg.out, artifacts.META_FILE)}")
    return result
