"""Data-free synthesis: generators trained against a frozen teacher (DAFL, with BN-statistics matching), and the
data-free loop that alternates them with the student's distillation.

The technique's public functions, for the distill stage (which runs the loop) and the drop stage (few real
images); other packages import these names from `pipeline.synthesize`, never its modules (tests/test_layers.py).
Each is imported on first use: the synthesizers register themselves as their modules load."""

from pipeline.lazy import lazy_exports

__all__ = [
    "DataFreeLoop",
    "StudentTraining",
    "create_synthesizer",
    "list_synthesizers",
    "load_real_images",
    "load_synthesizer",
    "merge_rank_pools",
    "mix_synthesizer",
    "rank_seed",
    "resolve_options",
    "save_synthesizer",
    "synthesizer_class",
    "teacher_class_balance",
    "teacher_view",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DataFreeLoop": "pipeline.synthesize.data_free_loop:DataFreeLoop",
        "StudentTraining": "pipeline.synthesize.data_free_loop:StudentTraining",
        "create_synthesizer": "pipeline.synthesize.base:create_synthesizer",
        "list_synthesizers": "pipeline.synthesize.base:list_synthesizers",
        "resolve_options": "pipeline.synthesize.base:resolve_options",
        "synthesizer_class": "pipeline.synthesize.base:synthesizer_class",
        "load_real_images": "pipeline.synthesize.real_images:load_real_images",
        "load_synthesizer": "pipeline.synthesize.state:load_synthesizer",
        "save_synthesizer": "pipeline.synthesize.state:save_synthesizer",
        "merge_rank_pools": "pipeline.synthesize.session:merge_rank_pools",
        "mix_synthesizer": "pipeline.synthesize.session:mix_synthesizer",
        "rank_seed": "pipeline.synthesize.session:rank_seed",
        "teacher_view": "pipeline.synthesize.session:teacher_view",
        "teacher_class_balance": "pipeline.synthesize.preview:teacher_class_balance",
    },
)
