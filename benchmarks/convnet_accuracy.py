"""The book's settings for its conv nets (Adam, lr 0.001, batch 100, float32) on Fashion-MNIST: test accuracy after
every epoch, with the time each took, through the trainer (data on the device, losses read back at intervals).

    XBACKPROP_DATA=../shared/data python -m benchmarks.convnet_accuracy --net simple-convnet --epochs 3
    XBACKPROP_DATA=../shared/data python -m benchmarks.convnet_accuracy --net deep-convnet --minutes 60

Prints a markdown table (epoch, train and test accuracy over the full sets, seconds); ``--json PATH`` writes the
rows too. ``--minutes`` stops after the last epoch that began within that many minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NETS = ("simple-convnet", "deep-convnet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=NETS, default="simple-convnet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--minutes", type=float, help="stop after the epoch that ends past this many minutes")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from xbackprop import DeepConvNet, SimpleConvNet, get_namespace
    from xbackprop.backend import describe_device
    from xbackprop.datasets import load_dataset
    from xbackprop.files import replace_atomically
    from xbackprop.optimizers import Adam
    from xbackprop.timing import machine_description
    from xbackprop.training import Schedule, to_device, train

    xp = get_namespace(args.backend, strict=True)
    dataset = load_dataset(args.dataset)
    data = to_device(dataset, xp, dtype="float32")
    make = SimpleConvNet if args.net == "simple-convnet" else DeepConvNet
    net = make(xp=xp, dtype="float32", seed=args.seed)
    optimizer = Adam(lr=0.001)
    iters_per_epoch = dataset.x_train.shape[0] // 100
    print(f"{args.net} on {args.dataset}, {args.backend} ({describe_device(xp)}), Adam lr 0.001, batch 100, float32, "
          f"seed {args.seed}; {machine_description()}\n")
    print("| epoch | train acc | test acc | seconds |\n| ---: | ---: | ---: | ---: |")
    rows, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        began = time.perf_counter()
        result = train(net, optimizer, data, Schedule(iters=iters_per_epoch, batch_size=100, seed=args.seed + epoch,
                                                      eval_interval=iters_per_epoch, eval_batch_size=1000))
        row = {"epoch": epoch, "train_acc": result.final_train_acc, "test_acc": result.final_test_acc,
               "seconds": time.perf_counter() - began}
        rows.append(row)
        print(f"| {epoch} | {row['train_acc']:.4f} | {row['test_acc']:.4f} | {row['seconds']:.0f} |", flush=True)
        if args.minutes is not None and time.perf_counter() - start > 60 * args.minutes:
            break
    if args.json:
        with replace_atomically(args.json) as temporary:
            temporary.write_text(json.dumps({"net": args.net, "backend": args.backend, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
