"""Lightning's private API the package relies on (all of it in ``lightning_gm/models/checkpointing.py``): these
tests fail first when a Lightning upgrade changes it."""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_gm.models.checkpointing import CLI_INSTANTIATOR, writes_logs


def test_the_cli_hands_its_configuration_to_save_hyperparameters_through_the_private_context_variable() -> None:
    from lightning.pytorch.core.mixins import hparams_mixin

    assert hparams_mixin._given_hyperparameters.get() is None
    with hparams_mixin._given_hyperparameters_context(hparams={"a": 1}, instantiator=CLI_INSTANTIATOR):
        assert hparams_mixin._given_hyperparameters.get() == {"a": 1, "_instantiator": CLI_INSTANTIATOR}
    assert hparams_mixin._given_hyperparameters.get() is None
    import lightning.pytorch.cli as cli

    assert f"{cli.instantiate_module.__module__}.{cli.instantiate_module.__qualname__}" == CLI_INSTANTIATOR


def test_writes_logs_reads_the_trainers_logging_decision() -> None:
    quiet = pl.Trainer(log_every_n_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert quiet._logger_connector.should_update_logs is False
    assert writes_logs(quiet) is False
    assert writes_logs(pl.Trainer(log_every_n_steps=0, fast_dev_run=True, logger=False)) is True
    assert writes_logs(None) is True
