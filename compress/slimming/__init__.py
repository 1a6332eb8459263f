"""Network slimming: prune any CNN with BatchNorm by its BN scaling factors, physically, and check it.

The modules, in the order a pruning runs through them:

- trace: one recorded forward (every op, its arguments, every tensor's shape);
- channels and ops: which channels must go together (classes) and which must stay (frozen, with the
  reason); fused: which BatchNorm subclasses can be pruned and keep their behaviour;
- sites, units, gating, splits: the units a decision acts on (groups, consumer-side selections), their
  scores, whether their BNs gate them, and the splits whose sizes must follow;
- importance, decide (and compress.budget): what each unit keeps;
- removal, compensate, surgery: what goes, β folded forward, layers cut in place;
- selfcheck, float64_check and diagnose: the pruned network against the silenced unpruned one (in the
  model's dtype, then both in float64), and where it differs;
- engine: `prune` itself, budgets, plan replay, and the attempts after a failed check.
"""

from compress.slimming.batchnorm import (all_gammas, bn_layers, check_floor, global_threshold,
                                         recalibrate_batchnorm, resolve_round_to)
from compress.slimming.decide import choose_kept, floor_channels
from compress.slimming.engine import (OLD_PLAN_FORMAT, PLAN_FORMAT, PruneOptions, least_budget, probe_batch,
                                      prunable_units, prune, removal_preview, zero_removed_channels)
from compress.slimming.importance import Unit
from compress.slimming.units import ChannelGroup, PruningUnits, Selection, pruning_units

__all__ = ["prune", "removal_preview", "least_budget", "zero_removed_channels", "recalibrate_batchnorm", "bn_layers",
           "all_gammas", "global_threshold", "choose_kept", "floor_channels", "resolve_round_to", "check_floor", "pruning_units",
           "prunable_units", "probe_batch", "PruneOptions", "Unit", "ChannelGroup", "Selection", "PruningUnits",
           "PLAN_FORMAT", "OLD_PLAN_FORMAT"]
