#!/usr/bin/env python3
"""Reference detections for the `models` crate, made with Python ONNX Runtime.

Purpose: an independent implementation of pre- and post-processing (Pillow resize, numpy decode
and NMS) that the Rust tests in `models/tests/it/reference.rs` compare against: boxes within 3 px,
scores within 0.02. Nothing here is shared with the Rust code except the semantics:

- coco-ssd (`ssd-tf`): stretch-resize to 300x300 with bilinear (triangle) filtering, feed uint8
  NHWC RGB; scores `[1,N,90]` (sigmoid already applied, column k = COCO id k+1), boxes
  `[1,N,1,4]` normalised (ymin, xmin, ymax, xmax); every (anchor, class) pair at or above the score
  threshold is a candidate.
- yolov12n (`yolo-ultralytics`): letterbox to 640x640 (scale = min(640/w, 640/h), new size
  rounded, bilinear resize, centred, pad value 114), float32 NCHW RGB / 255; output `[1,4+C,N]`
  (cx, cy, w, h in input pixels, then C class scores); one candidate per anchor (best class).
- Both: class-aware greedy NMS at IoU 0.5, boxes mapped back to original pixels and clipped.

Usage (from the repository root, after `scripts/setup`):

    python3 -m venv .cache/gridsense/pyenv
    .cache/gridsense/pyenv/bin/pip install onnxruntime==1.32.0 numpy pillow
    .cache/gridsense/pyenv/bin/python scripts/reference/detect_reference.py \
        > models/tests/fixtures/reference.json

Inputs: `$GRIDSENSE_CACHE` (default `.cache/gridsense`) for the photos and yolov12n, and
`models/zoo/coco-ssd/model.onnx`. Output: JSON on stdout.
"""

import ast
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("GRIDSENSE_CACHE", os.path.join(ROOT, ".cache", "gridsense"))
IMAGES = ["astronaut.png", "motorcycle_left.png", "coffee.png", "chelsea.png"]
SCORE_THRESHOLD = 0.3
IOU_THRESHOLD = 0.5
MAX_DETECTIONS = 100

# COCO category ids (91-id space) -> names; ids absent here are unused by COCO.
COCO91 = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(cands):
    """cands: list of (score, label, [x1,y1,x2,y2]); class-aware greedy NMS."""
    cands = sorted(cands, key=lambda c: -c[0])
    kept = []
    for c in cands:
        if all(k[1] != c[1] or iou(k[2], c[2]) <= IOU_THRESHOLD for k in kept):
            kept.append(c)
        if len(kept) == MAX_DETECTIONS:
            break
    return kept


def clip(box, w, h):
    return [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h),
            min(max(box[2], 0.0), w), min(max(box[3], 0.0), h)]


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def coco_ssd(sess, img):
    w, h = img.size
    x = np.asarray(img.resize((300, 300), Image.BILINEAR), dtype=np.uint8)[None]
    scores, boxes = sess.run(["Postprocessor/Slice:0", "Postprocessor/ExpandDims_1:0"],
                             {"image_tensor:0": x})
    scores, boxes = scores[0], boxes[0, :, 0, :]
    cands = []
    for anchor, col in zip(*np.nonzero(scores >= SCORE_THRESHOLD)):
        label = COCO91.get(int(col) + 1)
        if label is None:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in boxes[anchor])
        cands.append((float(scores[anchor, col]), label, clip([xmin * w, ymin * h, xmax * w, ymax * h], w, h)))
    return nms(cands)


def yolo(sess, img):
    w, h = img.size
    size = 640
    r = min(size / w, size / h)
    nw, nh = int(round(w * r)), int(round(h * r))
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas = Image.new("RGB", (size, size), (114, 114, 114))
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (left, top))
    x = (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    names = ast.literal_eval(sess.get_modelmeta().custom_metadata_map["names"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    out = out[0].T  # [N, 4+C]
    cls = out[:, 4:]
    best = cls.argmax(axis=1)
    best_score = cls[np.arange(len(cls)), best]
    cands = []
    for i in np.nonzero(best_score >= SCORE_THRESHOLD)[0]:
        cx, cy, bw, bh = (float(v) for v in out[i, :4])
        box = [(cx - bw / 2 - left) / r, (cy - bh / 2 - top) / r,
               (cx + bw / 2 - left) / r, (cy + bh / 2 - top) / r]
        cands.append((float(best_score[i]), names[int(best[i])], clip(box, w, h)))
    return nms(cands)


def main():
    models = {"coco-ssd": (os.path.join(ROOT, "models", "zoo", "coco-ssd", "model.onnx"), coco_ssd),
              "yolov12n": (os.path.join(CACHE, "models", "yolov12n", "yolov12n.onnx"), yolo)}
    result = {
        "generated_by": "scripts/reference/detect_reference.py",
        "onnxruntime": ort.__version__,
        "pillow": Image.__version__,
        "score_threshold": SCORE_THRESHOLD,
        "iou_threshold": IOU_THRESHOLD,
        "models": {},
    }
    for name, (path, run) in models.items():
        sess = session(path)
        per_image = {}
        for image in IMAGES:
            img = Image.open(os.path.join(CACHE, "media", image)).convert("RGB")
            per_image[image] = [
                {"label": label, "score": round(score, 5), "box": [round(v, 2) for v in box]}
                for score, label, box in run(sess, img)
            ]
        result["models"][name] = per_image
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
