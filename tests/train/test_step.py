"""The shared training step: the deferred finite check, the compile fallback, the input layout."""

import math

import pytest
import torch
import torch._dynamo.exc

from partsearch.config import Config, TrainConfig
from partsearch.losses.criterion import PartSearchCriterion
from partsearch.train import step as step_module
from partsearch.runs import load_checkpoint
from partsearch.train.engine import TrainingError, train
from partsearch.train.step import FiniteWatch, Stepper, is_compile_error


def observe(watch, values, start=1):
    for n, value in enumerate(values, start=start):
        loss = torch.tensor(value)
        watch.observe(loss, {"a": loss / 2, "b": loss / 2}, where=n)


def test_watch_names_the_first_non_finite_micro_batch_and_its_terms():
    watch = FiniteWatch()
    observe(watch, [1.0, 2.0, math.nan, math.inf, 3.0])
    where, terms = watch.first_bad()
    assert where == 3
    assert list(terms) == ["loss", "a", "b"] and all(math.isnan(v) for v in terms.values())


def test_watch_reports_nothing_while_every_loss_is_finite():
    watch = FiniteWatch()
    assert watch.first_bad() is None
    observe(watch, [1.0, 2.0])
    assert watch.first_bad() is None
    observe(watch, [math.inf], start=3)
    assert watch.first_bad()[0] == 3


def nan_from_call(monkeypatch, first_bad_call):
    real_forward = PartSearchCriterion.forward
    calls = []

    def forward(self, *args):
        calls.append(1)
        losses = real_forward(self, *args)
        if len(calls) >= first_bad_call:
            losses["id_global"] = losses["id_global"] * float("nan")
        return losses

    monkeypatch.setattr(PartSearchCriterion, "forward", forward)


def test_a_late_noticed_nan_still_names_its_step_and_no_checkpoint_follows_it(tiny_cfg, tmp_path, monkeypatch):
    nan_from_call(monkeypatch, 2)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 \(epoch 1, batch 2\): .*id_global=nan") as err:
        train(tiny_cfg("train.log_every=50"), tmp_path / "run")
    assert "last good checkpoint: none yet" in str(err.value)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_nan_check_every_step_notices_the_bad_step_at_once(tiny_cfg, tmp_path, monkeypatch):
    nan_from_call(monkeypatch, 2)
    with pytest.raises(TrainingError, match=r"at step 2 .*noticed at step 2,"):
        train(tiny_cfg("train.log_every=50", "train.nan_check_every=1"), tmp_path / "run")


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(tiny_cfg, tmp_path, monkeypatch, capsys):
    eager = train(tiny_cfg("train.max_steps=2", "train.epochs=1"), tmp_path / "eager")
    capsys.readouterr()

    def failing_compile(fn, **kwargs):
        def compiled(*args, **kw):
            inner = TypeError("BooleanAtom not allowed in this context")
            raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, inner, None)

        return compiled

    monkeypatch.setattr(step_module.torch, "compile", failing_compile)
    fallback = train(tiny_cfg("train.max_steps=2", "train.epochs=1", "train.compile=true"), tmp_path / "compiled")
    warnings = [line for line in capsys.readouterr().out.splitlines() if "torch.compile failed" in line]
    assert len(warnings) == 1 and "continues without compile" in warnings[0]
    a, b = load_checkpoint(eager / "last.pt")["model"], load_checkpoint(fallback / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_errors_are_told_apart_from_the_model_s_own_errors():
    def broken_backend(graph, example_inputs):
        raise TypeError("simulated inductor failure")

    compiled = torch.compile(lambda x: x * 2 + 1, backend=broken_backend)
    with pytest.raises(Exception) as err:
        compiled(torch.ones(3))
    assert is_compile_error(err.value)
    assert not is_compile_error(RuntimeError("CUDA out of memory"))


def test_channels_last_puts_the_images_in_nhwc_on_the_device():
    model = torch.nn.Conv2d(3, 4, 1)
    cfg = Config(train=TrainConfig(channels_last=True, fused_optimizer=False))
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    stepper = Stepper(cfg, model, torch.nn.Identity(), optimizer, scheduler, torch.device("cpu"))
    batch = {"image": torch.randn(2, 3, 8, 4), "ids": torch.zeros(2, 5, dtype=torch.long),
             "mask": torch.ones(2, 5, dtype=torch.long), "label": torch.arange(2)}
    images = stepper.to_device(batch)[0]
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, batch["image"])


def test_channels_last_puts_the_image_backbone_s_conv_weights_in_nhwc(tiny_cfg):
    from partsearch.train.step import build_parts

    model, _, _ = build_parts(tiny_cfg("train.channels_last=true"), 8, 100, torch.device("cpu"))
    convs = [p for p in model.image_backbone.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


class _Scale(torch.nn.Module):
    """A one-parameter 'model': both embeddings are w * the images' sum."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, images, ids, mask):
        out = self.w * images.sum()
        return out, out


def _toy_stepper(**train):
    model = _Scale()
    cfg = Config(train=TrainConfig(fused_optimizer=False, **train))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    criterion = lambda image, text, labels: {"loss": 10.0 * image}  # noqa: E731 - d loss / d w = 10 * sum
    return model, Stepper(cfg, model, criterion, optimizer, scheduler, torch.device("cpu"))


def _micro(stepper, value):
    images = torch.full((1, 1, 1, 1), float(value))
    stepper.micro_batch(images, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), torch.zeros(1))


def test_grad_clip_bounds_the_update():
    model, stepper = _toy_stepper(grad_clip=0.5)
    _micro(stepper, 1.0)  # gradient 10
    stepper.optimizer_step()
    assert model.w.item() == pytest.approx(1.0 - 0.5)


def test_accumulate_averages_the_micro_batches_of_a_step():
    model, stepper = _toy_stepper(accumulate=2)
    _micro(stepper, 1.0)  # gradients 10 and 30, each divided by 2
    _micro(stepper, 3.0)
    stepper.optimizer_step()
    assert model.w.item() == pytest.approx(1.0 - 20.0)
