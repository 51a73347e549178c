"""ptcore.integrations.hf.LMDistillLoss against the loss on materialised logits, per model
family: values and the gradient of every student parameter in float64; padding, masked
labels, tied heads, head biases, logit scales, a teacher with a padded vocabulary; lm_head
is never called; refusals name what is wrong."""
import pytest
import torch
import torch.nn.functional as F

from tests.integrations.hf_fixtures import no_logits, tiny

from ptcore.integrations.hf import (CausalLM, LMDistillLoss, UnsupportedModelError,
                                    VocabularyMismatchError, check_same_vocabulary,
                                    held_out_loss)

V = 300


def _reference(student, teacher, ids, mask, labels, T, hard, soft, divergence="forward_kl",
               beta=0.5):
    """KD on the models' own logits (float64), written out: rows are positions 0..L-2,
    targets the next tokens; padded or -100 targets drop their row; mean over the rest."""
    s = student(input_ids=ids, attention_mask=mask).logits[:, :-1]
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1, :s.shape[-1]]
    y = (ids if labels is None else labels).clone()
    if mask is not None:
        y[mask == 0] = -100
    y = y[:, 1:]
    keep = y != -100
    s, t, y = s[keep], t[keep], y[keep]
    ls, lt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    if divergence == "forward_kl":
        rows = (lt.exp() * (lt - ls)).sum(-1)
    else:  # jsd: beta·KL(p_t || m) + (1 - beta)·KL(p_s || m), m = beta·p_t + (1 - beta)·p_s
        m = (beta * lt.exp() + (1 - beta) * ls.exp()).log()
        rows = beta * (lt.exp() * (lt - m)).sum(-1) + (1 - beta) * (ls.exp() * (ls - m)).sum(-1)
    return (soft * T * T * rows + hard * F.cross_entropy(s, y, reduction="none")).mean()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _batch(vocab, seed=0, b=3, length=11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0   # right padding
    mask[2, :3] = 0    # left padding
    labels = ids.clone()
    labels[0, 2:5] = -100  # a prompt the user masked
    return ids, mask, labels


@pytest.mark.parametrize("family, divergence", [
    ("llama", "forward_kl"), ("qwen2", "forward_kl"), ("gpt2", "forward_kl"),
    ("phi", "forward_kl"), ("cohere", "forward_kl"), ("llama", "jsd")])
def test_fused_loss_and_every_gradient_equal_the_materialised_logits(family, divergence):
    student = tiny(family, V, seed=1).double().train()
    teacher = tiny(family, V, seed=2, hidden=48).double()
    ids, mask, labels = _batch(V)
    kw = dict(T=2.0, hard=0.5, soft=1.0)
    ref = _reference(student, teacher, ids, mask, labels, divergence=divergence, **kw)
    ref.backward()
    want = _grads(student)
    student.zero_grad(set_to_none=True)
    with no_logits(student, teacher):
        loss = LMDistillLoss(student, teacher, temperature=2.0, hard_weight=0.5,
                             divergence=divergence, chunk_size=7)(ids, mask, labels)
        loss.backward()
    got = _grads(student)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-9, atol=0)
    assert set(got) == set(want) and len(want) == len(list(student.parameters()))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-7, atol=1e-12, msg=name)


def test_tied_embeddings_get_both_gradients_through_the_one_weight():
    student = tiny("gpt2", V, seed=1).double()
    assert student.lm_head.weight is student.transformer.wte.weight
    ids, mask, labels = _batch(V)
    LMDistillLoss(student, tiny("gpt2", V, seed=2).double())(ids, mask, labels).backward()
    grad = student.transformer.wte.weight.grad
    # The head's gradient reaches every row (softmax), the embedding's only the tokens seen.
    assert grad is not None and bool((grad[:3] != 0).any())


def test_a_teacher_padded_larger_is_sliced_to_the_students_vocabulary():
    student = tiny("llama", V, seed=1).double()
    teacher = tiny("qwen2", V + 84, seed=2).double()  # e.g. rounded up to a multiple of 128
    ids, mask, labels = _batch(V)
    ref = _reference(student, teacher, ids, mask, labels, T=1.0, hard=0.0, soft=1.0)
    got = LMDistillLoss(student, teacher)(ids, mask, labels)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-9, atol=0)
    with pytest.raises(VocabularyMismatchError, match="fewer than the student's"):
        LMDistillLoss(tiny("llama", V), tiny("llama", V - 8))


def test_num_items_in_batch_sums_over_tokens_and_divides_once():
    student, teacher = tiny("llama", V, seed=1).double(), tiny("llama", V, seed=2).double()
    ids, mask, labels = _batch(V)
    fn = LMDistillLoss(student, teacher)
    parts = [fn(ids[i:i + 1], mask[i:i + 1], labels[i:i + 1], num_items_in_batch=1)
             for i in range(3)]
    count = sum(int((labels[i, 1:][mask[i, 1:] == 1] != -100).sum()) for i in range(3))
    torch.testing.assert_close(sum(parts) / count, fn(ids, mask, labels), rtol=1e-10, atol=0)


def test_labels_only_and_held_out_loss_are_the_cross_entropy_without_logits():
    student = tiny("qwen2", V, seed=1).double()
    ids, mask, labels = _batch(V)
    y = labels.masked_fill(mask == 0, -100)[:, 1:]
    logits = student(input_ids=ids, attention_mask=mask).logits[:, :-1]
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    unpadded = student(input_ids=ids).logits[:, :-1]
    plain = F.cross_entropy(unpadded.flatten(0, 1), ids[:, 1:].flatten()).item()
    with no_logits(student):
        got = LMDistillLoss(student, soft_weight=0.0, hard_weight=1.0)(ids, mask, labels)
        held = held_out_loss(student, ids)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-9, atol=0)
    assert held == pytest.approx(plain, rel=1e-9)
    with pytest.raises(AssertionError, match="materialised"), no_logits(student):
        student(input_ids=ids)  # the check itself catches the model's own head


def test_a_top_k_teacher_per_call_matches_the_full_teacher_at_k_equal_v():
    student, teacher = tiny("llama", V, seed=1).double(), tiny("llama", V, seed=2).double()
    ids, mask, labels = _batch(V)
    with torch.no_grad():
        lp = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
    values, indices = lp.topk(V, dim=-1)
    fn = LMDistillLoss(student)
    with no_logits(student):
        got = fn(ids, mask, labels, teacher_values=values, teacher_indices=indices)
    torch.testing.assert_close(
        got,
        LMDistillLoss(student, teacher)(ids, mask, labels), rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="no teacher"):
        fn(ids, mask, labels)


def test_soft_capped_and_unknown_logit_transforms_are_refused():
    with pytest.raises(UnsupportedModelError, match="soft-capping"):
        CausalLM(tiny("gemma2", V))
    model = tiny("llama", V)
    forward = model.forward

    def doubled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out
    model.forward = doubled
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM's logits are not"):
        CausalLM(model)
    with pytest.raises(UnsupportedModelError, match="unwrapped"):
        CausalLM(torch.nn.Linear(2, 2))


def test_different_vocabularies_are_refused_naming_the_first_differing_token():
    a = {"<pad>": 0, "the": 1, "cat": 2, "sat": 3}
    assert check_same_vocabulary(a, dict(a)) == 4
    with pytest.raises(VocabularyMismatchError, match=r"token id 2: 'cat' for the teacher, "
                                                      r"'dog' for the student"):
        check_same_vocabulary(a, {"<pad>": 0, "the": 1, "dog": 2, "sat": 3})
    with pytest.raises(VocabularyMismatchError, match=r"token id 4: '<none>'.*'mat'"):
        check_same_vocabulary(a, {**a, "mat": 4})


def test_gradient_checkpointing_and_bf16_autocast_train_as_without_them():
    teacher = tiny("llama", V, seed=2)
    ids, mask, labels = _batch(V)

    def grads(student, autocast=False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = LMDistillLoss(student, teacher, hard_weight=0.5)(ids, mask, labels)
        loss.backward()
        return loss.detach().float(), _grads(student)

    loss, want = grads(tiny("llama", V, seed=1).train())
    checkpointed = tiny("llama", V, seed=1).train()
    checkpointed.activation_checkpointing_enable()  # transformers 5's name
    assert checkpointed.is_activation_checkpointing
    loss_ckpt, got = grads(checkpointed)
    assert loss_ckpt == loss
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
    loss_bf16, got = grads(tiny("llama", V, seed=1).train(), autocast=True)
    assert abs(loss_bf16 - loss) < 1e-3 * loss
    for name in want:  # bfloat16 matmuls: at most 0.8% of each gradient's norm, measured
        assert (got[name] - want[name]).norm() <= 2e-2 * want[name].norm(), name


def test_heads_padded_beyond_the_tokenizer_on_either_side():
    """Configs that differ only in vocab_size padding: with vocab_size (the tokenizer's V)
    the teacher keeps V rows and the student's extra rows get teacher probability 0;
    values and every student gradient equal the loss on materialised logits (float64)."""
    student = tiny("qwen2", V + 44, seed=1).double().train()   # padded less than the teacher
    teacher = tiny("qwen2", V + 84, seed=2).double()
    ids, mask, labels = _batch(V)
    y = labels.masked_fill(mask == 0, -100)[:, 1:]
    keep = y != -100
    s = student(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1][keep][:, :V]
    lt, ls = F.log_softmax(t / 2, -1), F.log_softmax(s / 2, -1)[:, :V]
    ref = (4 * (lt.exp() * (lt - ls)).sum(-1) + 0.5 * F.cross_entropy(s, y[keep],
                                                                         reduction="none")).mean()
    ref.backward()
    want = _grads(student)
    student.zero_grad(set_to_none=True)
    with no_logits(student, teacher):
        loss = LMDistillLoss(student, teacher, temperature=2.0, hard_weight=0.5, vocab_size=V,
                             chunk_size=7)(ids, mask, labels)
        loss.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-9, atol=0)
    for name, g in _grads(student).items():
        torch.testing.assert_close(g, want[name], rtol=1e-7, atol=1e-12, msg=name)
    # the student padded more than the teacher: only vocab_size makes it a match
    with pytest.raises(VocabularyMismatchError, match="needs vocab_size"):
        LMDistillLoss(tiny("qwen2", V + 44), tiny("qwen2", V + 4))
    LMDistillLoss(tiny("qwen2", V + 44), tiny("qwen2", V + 4), vocab_size=V)
    with pytest.raises(VocabularyMismatchError, match="fewer than the vocabulary's"):
        LMDistillLoss(tiny("qwen2", V + 44), tiny("qwen2", V - 4), vocab_size=V)
    with pytest.raises(VocabularyMismatchError, match="student's lm_head has"):
        LMDistillLoss(tiny("qwen2", V - 4), tiny("qwen2", V + 4), vocab_size=V)


def test_parts_and_cosine_through_the_adapter():
    student, teacher = tiny("llama", V, seed=1).double(), tiny("llama", V, seed=2).double()
    ids, mask, labels = _batch(V)
    fn = LMDistillLoss(student, teacher, temperature=2.0, hard_weight=0.5)
    loss, parts = fn(ids, mask, labels, return_parts=True)
    torch.testing.assert_close(loss, parts["soft"] + 0.5 * parts["hard"], rtol=1e-10, atol=0)
    torch.testing.assert_close(parts["soft"].double(), _reference(
        student, teacher, ids, mask, labels, T=2.0, hard=0.0, soft=1.0).detach(),
        rtol=1e-9, atol=0)
    torch.testing.assert_close(parts["hard"].double(), _reference(
        student, teacher, ids, mask, labels, T=2.0, hard=1.0, soft=0.0).detach(),
        rtol=1e-9, atol=0)
    y = labels.masked_fill(mask == 0, -100)[:, 1:]
    keep = y != -100
    s = student(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    t = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    ref = (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    with no_logits(student, teacher):
        got = LMDistillLoss(student, teacher, divergence="cosine")(ids, mask, labels)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-9, atol=0)
