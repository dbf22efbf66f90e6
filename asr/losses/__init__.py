"""Losses: the RNN-T loss (full and lean paths); MWER and efficiency terms as they land."""

from asr.losses.rnnt import rnnt_loss, rnnt_loss_from_log_probs, rnnt_loss_lean

__all__ = ["rnnt_loss", "rnnt_loss_from_log_probs", "rnnt_loss_lean"]
