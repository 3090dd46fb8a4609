"""The transformers ``Trainer`` internals our Trainer subclasses rely on (issue 20 item 3).

Checkpoint saving goes through the public ``save_model`` (``Trainer._save_checkpoint`` calls it); no subclass
overrides ``_save``. Loading a checkpoint's weights has no public hook in transformers 5.x (a callback's
``on_train_begin`` runs after the weights were loaded, and no ``on_load`` event exists), so
``TrainableOnlyTrainer`` (QA: trainable tensors only) and ``GenRecTrainer`` (a ``UserStateLM`` is no PEFT model to
the Trainer) still override the private ``_load_from_checkpoint`` / ``_load_best_model``. If an upgrade renames
them, changes their signature or stops calling them, an override would be skipped silently and a resumed run would
train from the wrong weights: these tests fail first, naming what changed.
"""

from __future__ import annotations

import inspect

import pytest
from transformers import Trainer

from llmrec.training.genrec import GenRecTrainer
from llmrec.training.qa import TrainableOnlyTrainer


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_private_load_hooks_keep_the_signatures_our_overrides_implement():
    assert _params(Trainer._load_from_checkpoint) == [
        ("self", inspect.Parameter.empty), ("resume_from_checkpoint", inspect.Parameter.empty), ("model", None)], \
        "transformers changed Trainer._load_from_checkpoint: update TrainableOnlyTrainer / GenRecTrainer"
    assert _params(Trainer._load_best_model) == [("self", inspect.Parameter.empty)], \
        "transformers changed Trainer._load_best_model: update GenRecTrainer"
    for cls, names in ((TrainableOnlyTrainer, ["_load_from_checkpoint"]),
                       (GenRecTrainer, ["_load_from_checkpoint", "_load_best_model"])):
        for name in names:
            assert _params(getattr(cls, name)) == _params(getattr(Trainer, name)), f"{cls.__name__}.{name}"


def test_the_trainer_still_calls_the_hooks_we_override():
    train = inspect.getsource(Trainer)  # the whole class: which private method makes the call may move
    assert "self._load_from_checkpoint(resume_from_checkpoint" in train, \
        "Trainer.train no longer loads checkpoint weights through _load_from_checkpoint"
    assert "self._load_best_model()" in train, "Trainer no longer loads the best model through _load_best_model"
    assert "self.save_model(output_dir, _internal_call=True)" in inspect.getsource(Trainer._save_checkpoint), \
        "Trainer._save_checkpoint no longer saves through the public save_model"


@pytest.mark.parametrize("cls", [TrainableOnlyTrainer, GenRecTrainer])
def test_checkpoints_are_written_through_the_public_save_model_only(cls):
    assert _params(cls.save_model) == _params(Trainer.save_model)
    assert "_save" not in vars(cls) and "_save_checkpoint" not in vars(cls)


def test_no_subclass_overrides_other_private_trainer_methods():
    """Only the two load hooks above are private overrides; anything new must be added here knowingly."""
    from llmrec.training.preference import _trainer_class

    allowed = {"_load_from_checkpoint", "_load_best_model"}
    for cls in (TrainableOnlyTrainer, GenRecTrainer, _trainer_class()):
        private = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__") and hasattr(Trainer, n)}
        assert private <= allowed, f"{cls.__name__} overrides private Trainer method(s) {sorted(private - allowed)}"
