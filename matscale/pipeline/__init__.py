"""The resumable pipeline: stage runner (:mod:`.runner`), stages (:mod:`.stages`), report
(:mod:`.report`), the fitted model (:mod:`.model`) and the pairs-fitting workflow."""
from matscale.pipeline.fit_workflow import load_pairs, run_fit_workflow
from matscale.pipeline.model import MacroModel, load, predict_paths
from matscale.pipeline.runner import STAGE_NAMES, STAGES, StageRunner, run_pipeline

__all__ = ["run_pipeline", "load", "MacroModel", "StageRunner", "STAGES", "STAGE_NAMES",
           "load_pairs", "run_fit_workflow", "predict_paths"]
