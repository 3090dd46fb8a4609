"""Library noise: our own deprecated calls are gone at the source; what comes from inside libraries is filtered
precisely (that message from that module), nothing else."""

from __future__ import annotations

import logging
import warnings

from llmrec.quiet import quiet_libraries


def test_filters_are_precise(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        for message in ("`is_gradient_checkpointing` is deprecated and will be removed in v6.", "something else"):
            warnings.warn_explicit(message, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "x.py", 1, module="mine")
    assert [(str(w.message), w.filename) for w in caught] == [("something else", "modeling_utils.py"),
                                                               ("`is_gradient_checkpointing` is deprecated", "x.py")]
    trainer_utils = logging.getLogger("transformers.trainer_utils")
    with caplog.at_level(logging.WARNING):
        quiet_libraries()
        quiet_libraries()  # idempotent: one filter
        trainer_utils.warning("mtime may not be reliable on this filesystem, falling back to numerical ordering")
        trainer_utils.warning("a checkpoint is missing")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
        logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    assert [r.getMessage() for r in caplog.records] == ["a checkpoint is missing"]
    assert len(trainer_utils.filters) == 1


def test_lora_training_and_beam_search_raise_no_future_warnings(tiny_llama_dir, tmp_path):
    from test_genrec import _catalogue_data, _sids

    from llmrec.data.splits import leave_one_out
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.training.genrec import GenRecTrainConfig, train_genrec

    data = _catalogue_data(n_users=4)
    split = leave_one_out(data.histories())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        plm = PersonalLM.create(_sids(), data.items, PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32",
                                                                       max_history=8))
        train_genrec(plm, split.train, split.valid[:2], GenRecTrainConfig(
            output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, eval_users=2, eval_steps=1,
            gradient_checkpointing=False))
        plm.recommend(["1", "2"], k=3)
    future = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if issubclass(w.category, FutureWarning)]
    assert future == []
