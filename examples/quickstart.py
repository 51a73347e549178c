"""Quick start: distil a teacher's temperature-softened outputs into a student with
ptcore.kd_loss, on random features, and show that the student learns to agree."""
import torch

import ptcore


def main():
    torch.manual_seed(0)
    print({k: v for k, v in ptcore.info().items() if k in ("ptcore", "native_loaded", "backends")})
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    student = torch.nn.Linear(32, 10)
    x = torch.randn(2048, 32)
    with torch.no_grad():
        t_logits = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    criterion = ptcore.nn.KDLoss(temperature=4.0)
    for step in range(201):
        loss = criterion(student(x), t_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            agree = (student(x).argmax(1) == t_logits.argmax(1)).float().mean().item()
            print(f"step {step:3d}  kd loss {loss.item():.4f}  agreement with teacher {agree:.1%}")


if __name__ == "__main__":
    main()
