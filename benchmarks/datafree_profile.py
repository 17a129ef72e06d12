"""Where a data-free iteration's time goes: one synthesis step vs one student KD step (one torch thread).

    OMP_NUM_THREADS=1 python benchmarks/datafree_profile.py lenet5-fmnist lenet5-half
    OMP_NUM_THREADS=1 python benchmarks/datafree_profile.py resnet20-fmnist resnet14

Prints seconds per call (mean of 3 after one warm-up) for the default bn-inversion synthesizer, batch 128.
"""

import dataclasses
import sys
import time

import torch

from pipeline.assets import resolve_teacher
from pipeline.data.transfer_set import TransferSet
from pipeline.models import create_model
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import create_synthesizer, resolve_options
from pipeline.synthesize.data_free_loop import DataFreeLoop, StudentTraining
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import freeze


def seconds_per_call(function, calls: int = 3) -> float:
    function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return round((time.perf_counter() - start) / calls, 4)


def main(teacher_name: str, student_name: str) -> None:
    torch.set_num_threads(1)
    loaded = TeacherSpec().load(resolve_teacher(f"embedded:{teacher_name}"))
    view = TeacherView(freeze(loaded.model), loaded.preprocess, loaded.num_classes, torch.device("cpu"))
    synthesizer = create_synthesizer("bn-inversion", view, resolve_options("bn-inversion"), 0)
    student = create_model(
        student_name, in_channels=view.input_shape[0], num_classes=view.num_classes, image_size=view.input_shape[1]
    )
    loop = DataFreeLoop(
        view, synthesizer, TransferSet(view.input_shape, view.num_classes, 10_000), student, StudentTraining(), 0
    )
    images = synthesizer.step(student)
    loop.add_images(images)
    print(f"{teacher_name} -> {student_name}, batch 128, one thread, seconds per call:")
    print(
        "  synthesis step (generator + teacher + student critic)", seconds_per_call(lambda: synthesizer.step(student))
    )
    print("  label new images with the teacher", seconds_per_call(lambda: loop.add_images(images)))
    print("  student KD step (augmented, teacher relabels)", seconds_per_call(loop.student_step))
    loop.settings = dataclasses.replace(loop.settings, augment=False)
    print("  student KD step (stored logits)", seconds_per_call(loop.student_step))
    synthesizer.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
