"""The cost of ``deterministic=True`` (torch's deterministic algorithms for a whole run) on
this machine: the same short fine-tuning run with and without it, alternated in one
process, reported as the ratio of medians. Usage: python benchmarks/deterministic_cost.py
[--rounds 5] [--device cpu]"""
import argparse
import statistics
import time

import torch


def _run(deterministic: bool, device: str) -> float:
    from ptcore import data, models, seed_everything, strategies

    seed_everything(0)
    digits = data.digits_dataset(image_size=32)
    net = models.create_model("resnet18", num_classes=10)
    ft = strategies.FineTune(net, mode="full", epochs=1, batch_size=64, progress=False,
                             device=device, deterministic=deterministic)
    start = time.perf_counter()
    ft.fit(torch.utils.data.Subset(digits, range(256)))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    _run(False, args.device)  # warm-up: first-call costs land outside the timings
    times = {False: [], True: []}
    for r in range(args.rounds):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):
            times[flag].append(_run(flag, args.device))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"device {args.device}, threads {torch.get_num_threads()}, {args.rounds} rounds: "
          f"median {off:.3f} s without, {on:.3f} s with deterministic=True: ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
