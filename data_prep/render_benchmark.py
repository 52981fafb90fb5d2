"""Phantom rendering speed on one core: `python -m data_prep.render_benchmark [--num 200]`.

Prints one JSON line per (body_part, style) with images_per_s.
"""

import argparse
import json
import os
import time

import cv2

from data_prep import render


def benchmark(num: int, image_size: int) -> list[dict]:
    """Render `num` phantoms per (body_part, style) and time them."""
    results = []
    for body_part in render.BODY_PARTS:
        for style in render.STYLES:
            render.render_phantom(body_part, style, 0, 0, image_size)  # warm caches and imports
            start = time.perf_counter()
            for index in range(num):
                render.render_phantom(body_part, style, 0, index, image_size)
            seconds = time.perf_counter() - start
            results.append(
                {
                    "body_part": body_part,
                    "style": style,
                    "image_size": image_size,
                    "num": num,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(num / seconds, 1),
                }
            )
    return results


def main() -> None:
    """Parse flags, pin to one core, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=200, help="images per (body_part, style)")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    # One core, as a data-prep worker gets: OpenCV would otherwise spread blurs over threads.
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    for result in benchmark(args.num, args.image_size):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
