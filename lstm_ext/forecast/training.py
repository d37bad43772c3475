"""The main job: train an LSTM forecaster on a series, keep the best epoch,
then evaluate it against honest baselines, plot, and export it for deployment
(``run``). Every epoch is checkpointed, so an interrupted run resumes."""
import contextlib
import math
import os
from dataclasses import asdict, replace
from typing import List, Tuple

import torch
from torch import nn
from tqdm import tqdm

from . import artifacts, evaluation
from .settings import TrainConfig, brief, precision_note
from .windows import prepare


def _changed_settings(saved: dict, cfg: TrainConfig) -> List[str]:
    """The settings a resumed run may not change (all but epochs and out, which
    names the folder the checkpoint was found in, however spelled)."""
    return [f"{name} {brief(saved[name])}, now {brief(value)}"
            for name, value in asdict(cfg).items()
            if name not in ("epochs", "out", "bf16") and saved[name] != value]


def _precision_changed(saved: dict, cfg: TrainConfig, path: str) -> None:
    """A run is resumed in the precision it was trained in: ValueError if not."""
    if saved["bf16"] != cfg.bf16:
        was = "bfloat16 mixed precision (--bf16)" if saved["bf16"] else "float32"
        again = "with --bf16" if saved["bf16"] else "without --bf16"
        raise ValueError(f"{path}: was trained in {was}; resume it {again}, or remove it "
                         "(or give --force) to start again")


def autocast(bf16: bool):
    """The context the training forward and loss run in: bfloat16 autocast on
    the CPU for --bf16 (the LSTM and its head in bf16, the weights float32),
    else nothing."""
    if bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _holds_run(folder: str) -> bool:
    return any(os.path.exists(os.path.join(folder, name))
               for name in (artifacts.CHECKPOINT, artifacts.MODEL_FILE))


def choose_out(cfg: TrainConfig, given: bool, resume: bool, force: bool, log) -> str:
    """The output folder: an existing run there is continued (``resume``),
    replaced (``force``), or else never overwritten: a folder given with
    --out is refused, the default one gives way to the next free name
    (runs/co2-2, ...), said in the log."""
    out = cfg.out
    if resume or force or not _holds_run(out):
        return out
    if given:
        raise ValueError(f"--out {out}: holds an earlier run; give --force to overwrite it, "
                         "--resume to continue it, or another --out")
    k = 2
    while _holds_run(f"{out}-{k}"):
        k += 1
    log(f"{out} holds an earlier run (--force overwrites it): writing to {out}-{k}")
    return f"{out}-{k}"


def distributed() -> Tuple[int, int]:
    """(rank, world size): under ``torchrun`` (WORLD_SIZE > 1) the process
    group is started, gloo on CPU, NCCL where GPUs exist; else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run(cfg: TrainConfig, resume: bool = False, quiet: bool = False, force: bool = False,
        baselines: str = "all") -> dict:
    """Trains with ``cfg`` (from ``cfg.out``'s checkpoint, if ``resume``),
    evaluates, plots and exports into ``cfg.out`` (None: a folder named after
    the data); returns what metrics.json holds. ``quiet`` prints nothing (no
    progress bar either)."""
    rank, world = distributed()
    quiet = quiet or rank != 0    # under torchrun rank 0 speaks and writes files
    log = (lambda *a: None) if quiet else print
    prep = prepare(cfg)           # every check of the data before any file is written
    series = prep.series
    out = choose_out(prep.cfg, cfg.out is not None, resume, force, log) if rank == 0 else None
    if world > 1:                 # every rank writes nothing but needs the folder's name
        import torch.distributed as dist
        shared = [out]
        dist.broadcast_object_list(shared, src=0)
        out = shared[0]
    cfg = replace(prep.cfg, out=out)
    if rank == 0:
        artifacts.make_out_dir(cfg.out)
    if prep.panel is not None:    # several series of a long-format file
        from . import panel
        log(panel.describe(prep))
    else:
        log(f"data: {series.source} [{series.column}], {len(series)} values"
            + (f", {series.filled} missing filled by interpolation in time"
               if series.filled else "")
            + f"; split train/val/test = {prep.split.train_end}/"
              f"{prep.split.val_end - prep.split.train_end}/{prep.split.n - prep.split.val_end}")
    for note in prep.notes:
        log(note)
    log(f"output folder: {cfg.out}; {torch.get_num_threads()} thread(s)"
        + (f" in each of {world} processes (DistributedDataParallel, every batch "
           "sharded across them)" if world > 1 else ""))
    linear = torch.tensor(prep.linear, dtype=torch.float32)
    seasonal = None if prep.seasonal is None else torch.tensor(prep.seasonal,
                                                               dtype=torch.float64)

    torch.manual_seed(cfg.seed)
    model, optimizer, generator = artifacts.training_objects(cfg)
    trained = model               # what computes the training loss (DDP's wrapper under torchrun)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        trained = DistributedDataParallel(model)
    history: List[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    start_epoch = 0
    ckpt_path = os.path.join(cfg.out, artifacts.CHECKPOINT)
    if resume and os.path.exists(ckpt_path):
        ckpt = artifacts.load_checkpoint(ckpt_path)
        _precision_changed(ckpt["config"], cfg, ckpt_path)
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
    if start_epoch == 0:  # epoch 0: the linear part alone (the LSTM's head is zero)
        model.eval()
        with torch.no_grad():
            best = {"val_loss": loss_fn(model(x_val), y_val).item(), "epoch": 0,
                    "state": {k: v.clone() for k, v in model.state_dict().items()}}
    epochs = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs,
                  desc="training", unit="epoch", disable=quiet)
    for epoch in epochs:
        if epoch - best["epoch"] >= cfg.patience and best["state"] is not None:
            break  # (epoch 0 counts: patience epochs without improving on the linear part)
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            optimizer.zero_grad()
            if world == 1:
                with autocast(cfg.bf16):  # (the loss of a float32 prediction either way)
                    loss = loss_fn(model(x_train[idx]).float(), y_train[idx])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                continue
            # every rank takes its share of the same batch; DDP averages the
            # gradients, so the step is the single process's (up to rounding)
            mine = idx[rank::world]
            with autocast(cfg.bf16):
                sq = ((trained(x_train[mine]).float() - y_train[mine]) ** 2).sum()
            (sq * (world / (len(idx) * cfg.horizon))).backward()
            optimizer.step()
            part = sq.detach().reshape(1)
            torch.distributed.all_reduce(part)
            total += part.item() / cfg.horizon
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x_val), y_val).item()
        if not (math.isfinite(total) and math.isfinite(val_loss)):
            if best["epoch"] == 0:
                raise ValueError(f"training diverged in epoch {epoch + 1} (training loss "
                                 f"{total / len(x_train):.3g}, validation loss {val_loss:.3g}); "
                                 "try a smaller --lr")
            log(f"\ntraining diverged in epoch {epoch + 1}; keeping epoch {best['epoch']}, "
                "the best before")
            break
        history.append({"epoch": epoch + 1, "train_loss": total / len(x_train),
                        "val_loss": val_loss})
        if val_loss < best["val_loss"] or not math.isfinite(best["val_loss"]):
            best = {"val_loss": val_loss, "epoch": epoch + 1,
                    "state": {k: v.clone() for k, v in model.state_dict().items()}}
        epochs.set_postfix(loss=f"{total / len(x_train):.4f}", val=f"{val_loss:.4f}",
                           best=best["epoch"])
        if rank == 0:             # one checkpoint writer
            artifacts.save_checkpoint(ckpt_path, cfg, epoch + 1, model, optimizer, generator,
                                      history, best, prep.scaler.to_dict(), linear, seasonal)
    epochs.close()
    if world > 1:
        torch.distributed.barrier()
        if rank != 0:             # rank 0 evaluates, plots and exports
            torch.distributed.destroy_process_group()
            return {}
    if not history:
        raise ValueError("no epoch was trained (check --epochs)")
    if best["epoch"] == 0:
        log("note: no epoch improved the validation loss of the linear part alone (epoch 0): "
            "the forecaster is the ridge autoregression without the LSTM's correction")
    stopped_early = len(history) < cfg.epochs
    if best["epoch"] >= cfg.epochs - 2 and not stopped_early:
        log(f"note: the best epoch ({best['epoch']}) is at the --epochs {cfg.epochs} cap: "
            "validation loss was still falling; early stopping did not trigger "
            "(more --epochs may help)")

    log(precision_note(cfg.bf16))
    # What follows reads the checkpoint back, as forecast and export do.
    ckpt = artifacts.load_checkpoint(ckpt_path)
    forecaster = artifacts.forecaster_from_checkpoint(ckpt)
    if prep.panel is not None:
        from . import panel
        result = panel.finish(prep, ckpt, ckpt_path, forecaster, cfg, best, stopped_early, log,
                              baselines == "all")
        if world > 1:
            torch.distributed.destroy_process_group()
        return result
    arima: dict = {}
    evaluated = evaluation.evaluate(prep, forecaster, cfg, arima, baselines == "all")
    metrics = evaluated["metrics"]
    intervals = evaluated["intervals"]
    # the intervals, calibrated on validation, join the checkpoint
    ckpt["intervals"] = intervals
    artifacts.save_atomic(ckpt, ckpt_path)
    beats = evaluation.report(evaluated, best, prep, cfg, log, arima)
    pngs = evaluation.plot(prep, forecaster, cfg, ckpt["history"], cfg.out, intervals)
    meta = artifacts.model_meta(cfg, prep.scaler.to_dict(), best["epoch"], series, metrics,
                                intervals)
    model_path = artifacts.export(forecaster, meta, cfg.out)
    artifacts.write_last_window(series, cfg.window, cfg.out)
    result = {"metrics": metrics, "beats_baselines": beats,
              "best": min(metrics, key=lambda name: metrics[name]["mae"]),
              "verdict": evaluation.verdict(metrics),
              "intervals": intervals, "coverage": evaluated["coverage"],
              "per_lead": evaluated["per_lead"], "arima": arima,
              "theta": evaluated.get("theta"),
              "settings": {k: getattr(cfg, k) for k in ("freq", "window", "horizon", "season",
                                                          "period")},
              "best_epoch": best["epoch"], "epochs_run": len(ckpt["history"]),
              "stopped_early": stopped_early, "threads": torch.get_num_threads(),
              "filled_missing": series.filled, "bf16": cfg.bf16}
    metrics_path = os.path.join(cfg.out, artifacts.METRICS_FILE)
    evaluation.write_metrics(result, metrics_path)
    log(f"\nwrote {metrics_path}, {pngs[0]}, {pngs[1]},\n"
        f"      {model_path} (TorchScript) and {os.path.join(cfg.out, artifacts.META_FILE)}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return result
