"""The book's settings for its conv nets (Adam, lr 0.001, batch 100, float32) on Fashion-MNIST: test accuracy after
every epoch, with the time each took, through the trainer (data on the device, losses read back at intervals).

    XBACKPROP_DATA=../shared/data python -m benchmarks.convnet_accuracy --net simple-convnet --epochs 3
    XBACKPROP_DATA=../shared/data python -m benchmarks.convnet_accuracy --net deep-convnet --minutes 60

Prints a markdown table (epoch, train and test accuracy over the full sets, seconds); ``--json PATH`` writes the
rows too. ``--minutes`` stops where another epoch like the last would end past that many minutes. ``--sampling
shuffle`` draws each epoch's minibatches from a shuffle of the training set (the book's Trainer draws them with
replacement).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NETS = ("simple-convnet", "deep-convnet")
IMPLEMENTATIONS = ("xbackprop", "torch")
BATCH, LR = 100, 0.001


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=NETS, default="simple-convnet")
    parser.add_argument("--implementation", choices=IMPLEMENTATIONS, default="xbackprop",
                        help="xbackprop's net, or the same SimpleConvNet in PyTorch (nn.Conv2d, torch.optim.Adam)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--minutes", type=float, help="run the epochs that fit in this many minutes")
    parser.add_argument("--backend", default="numpy", help="xbackprop's backend")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", help="a folder holding the dataset's files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling", choices=("replacement", "shuffle"), default="replacement",
                        help="minibatch rows drawn with replacement (the book's Trainer) or each epoch a shuffle")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.implementation == "torch" and args.net != "simple-convnet":
        parser.error("--implementation torch has the SimpleConvNet only")

    from xbackprop.datasets import load_dataset
    from xbackprop.files import replace_atomically
    from xbackprop.timing import machine_description

    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    run_epoch, accuracies, where = (_xbackprop if args.implementation == "xbackprop" else _torch)(args, dataset)
    sampling = "shuffled each epoch" if args.sampling == "shuffle" else "drawn with replacement"
    print(f"{args.net} on {dataset.name}, {args.implementation} {where}, Adam lr {LR}, batch {BATCH}, float32, "
          f"seed {args.seed}, minibatches {sampling}; {machine_description()}\n")
    print("| epoch | train acc | test acc | seconds training | seconds evaluating |\n"
          "| ---: | ---: | ---: | ---: | ---: |")
    rows, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        began = time.perf_counter()
        run_epoch(epoch)
        trained = time.perf_counter()
        train_acc, test_acc = accuracies()
        row = {"epoch": epoch, "train_acc": train_acc, "test_acc": test_acc,
               "seconds_training": trained - began, "seconds_evaluating": time.perf_counter() - trained}
        rows.append(row)
        print(f"| {epoch} | {row['train_acc']:.4f} | {row['test_acc']:.4f} | {row['seconds_training']:.0f} | "
              f"{row['seconds_evaluating']:.0f} |", flush=True)
        if args.minutes is not None and time.perf_counter() - start + (time.perf_counter() - began) > 60 * args.minutes:
            break  # another epoch like this one would not fit
    if args.json:
        with replace_atomically(args.json) as temporary:
            temporary.write_text(json.dumps({"net": args.net, "implementation": args.implementation,
                                             "backend": args.backend, "sampling": args.sampling, "seed": args.seed,
                                             "rows": rows}, indent=1))
    return 0


def _xbackprop(args: argparse.Namespace, dataset: object) -> tuple:
    """xbackprop's net through its trainer (data on the device, the trainer's compiled or eager steps)."""
    from xbackprop import DeepConvNet, SimpleConvNet, get_namespace
    from xbackprop.backend import describe_device
    from xbackprop.optimizers import Adam
    from xbackprop.training import DeviceData, Schedule, make_count, to_device, train

    xp = get_namespace(args.backend, strict=True)
    data = to_device(dataset, xp, dtype="float32")
    net = (SimpleConvNet if args.net == "simple-convnet" else DeepConvNet)(xp=xp, dtype="float32", seed=args.seed)
    optimizer = Adam(lr=LR)
    # train() looks at a token of the test set (after its first step and its last); the table's accuracies are
    # measured once an epoch over both full sets
    token = DeviceData(data.x_train, data.t_train, data.x_test[:100, ...], data.t_test[:100], data.num_classes)

    def run_epoch(epoch: int) -> None:
        train(net, optimizer, token, Schedule(iters=data.x_train.shape[0] // BATCH, batch_size=BATCH,
                                              seed=args.seed + epoch, eval_interval=data.x_train.shape[0] // BATCH,
                                              train_acc_source="batch", sampling=args.sampling))

    count = make_count(net, xp)  # as train() evaluates: compiled where the backend compiles (JAX)

    def accuracies() -> tuple[float, float]:
        compiled = {} if count is None else {"count": count}
        return tuple(int(net.count_correct(x, t, batch_size=1000, **compiled)) / x.shape[0]
                     for x, t in ((data.x_train, data.t_train), (data.x_test, data.t_test)))

    return run_epoch, accuracies, f"on {args.backend} ({describe_device(xp)})"


def _torch(args: argparse.Namespace, dataset: object) -> tuple:
    """The same SimpleConvNet, initialisation and minibatches in PyTorch eager on the CPU: torch.optim.Adam."""
    import numpy as np
    import torch

    from xbackprop.training.loop import epoch_rows

    from .conv_steps import torch_simple_convnet

    def images(x: np.ndarray) -> object:
        return torch.from_numpy((x.astype(np.float32) / dataset.max_value).reshape(x.shape[0], 1, *x.shape[1:]))

    x_train, x_test = images(dataset.x_train), images(dataset.x_test)
    t_train, t_test = (torch.from_numpy(t.astype(np.int64)) for t in (dataset.t_train, dataset.t_test))
    model = torch_simple_convnet(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def run_epoch(epoch: int) -> None:
        rows = epoch_rows(np.random.default_rng(args.seed + epoch), x_train.shape[0], x_train.shape[0] // BATCH,
                          BATCH, args.sampling)  # the rows xbackprop's trainer draws from the same seed
        for batch in torch.from_numpy(rows):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x_train[batch]), t_train[batch]).backward()
            optimizer.step()

    def accuracies() -> tuple[float, float]:
        with torch.no_grad():
            return tuple(float(sum((model(x[i:i + 1000]).argmax(1) == t[i:i + 1000]).sum() for i in
                                   range(0, x.shape[0], 1000))) / x.shape[0]
                         for x, t in ((x_train, t_train), (x_test, t_test)))

    return run_epoch, accuracies, f"eager on the CPU (torch {torch.__version__})"


if __name__ == "__main__":
    raise SystemExit(main())
