"""The README's tour, runnable: the three strategies from Python on the embedded digits
(small sizes and few epochs, so it finishes in a few minutes on a laptop CPU)."""
import torch

from ptcore import data, models, strategies


def main(out="runs/tour"):
    torch.manual_seed(0)
    digits = data.digits_dataset(image_size=32)                      # embedded, offline
    train, val, test = data.train_val_test_split(digits, seed=0)

    # Fine-tuning: frozen through layer3 (its output cached), layer-wise learning rates.
    net = models.create_model("resnet18", weights=None, num_classes=10)  # or "DEFAULT"
    ft = strategies.FineTune(net, mode="partial", freeze="layer3", lr=1e-3, epochs=2)
    print("finetune", ft.fit(train, val, out_dir=f"{out}/ft")["final"])

    # Incremental: classes arrive in 5 tasks of 2; replay + LwF keep the old ones.
    inc = strategies.Incremental(models.create_model("resnet18", num_classes=2),
                                 method="lwf+replay", memory=100, epochs=1)
    res = inc.fit(data.class_tasks(train, 5), data.class_tasks(test, 5), out_dir=f"{out}/inc")
    print("incremental average accuracy", res["average_incremental_accuracy"])

    # Distillation: the fine-tuned network teaches a small student from 5 labels per class
    # and the unlabelled rest; the teacher's top-5 logits are computed once and cached.
    shots, rest = data.k_shot(train, 5, seed=0)
    # precise_bn: MobileNetV3's BatchNorm (momentum 0.01) needs its statistics recomputed
    # after a run this short, or it scores at chance in eval mode.
    student = models.create_model("mobilenet_v3_small", num_classes=10)
    kd = strategies.Distill(net, student, temperature=2.0, mode="offline", topk=5, epochs=2,
                            precise_bn=4)
    print("distill", kd.fit(shots, unlabelled=rest, val=val, out_dir=f"{out}/kd")["final"])


if __name__ == "__main__":
    main()
