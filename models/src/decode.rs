//! Output decoders (SSD TF Object Detection API, Ultralytics YOLOv8/11/12, YOLOv5) and
//! class-aware non-maximum suppression: raw output tensors in, [`Detection`]s in frame pixels out.
//!
//! Main types: [`Detection`], [`BBox`], [`ClassRule`]. Pure functions on slices, so they are
//! tested without a model. This module must not call ONNX Runtime or touch images.

use serde::Serialize;

use crate::preprocess::Transform;

/// One detected object, in the pixels of the frame that was fed in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Class index in the decoder's class space (for `coco91`, the COCO category id).
    pub class: usize,
    /// Class label from the manifest.
    pub label: String,
    /// Confidence in 0..=1.
    pub score: f32,
    /// Box in frame pixels.
    #[serde(rename = "box")]
    pub bbox: BBox,
}

/// An axis-aligned box, `x1 <= x2`, `y1 <= y2`, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    /// Left.
    pub x1: f32,
    /// Top.
    pub y1: f32,
    /// Right.
    pub x2: f32,
    /// Bottom.
    pub y2: f32,
}

/// What to do with candidates of one class: its label and the score it must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRule {
    /// The label reported.
    pub label: String,
    /// Minimum score (the manifest's `score`, or its `per_class` entry).
    pub min_score: f32,
}

/// An output tensor did not have the shape its decoder reads.
#[derive(Debug, thiserror::Error)]
#[error("output `{output}` has shape {found:?}, the decoder expects {expected}")]
pub struct ShapeError {
    /// The output's name.
    pub output: String,
    /// What the decoder expects, e.g. `[1, N, 90]`.
    pub expected: String,
    /// The shape found.
    pub found: Vec<i64>,
}

/// A candidate before NMS: class index, score and box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) class: usize,
    pub(crate) score: f32,
    pub(crate) bbox: BBox,
}

/// An output tensor as ONNX Runtime hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawOutput<'a> {
    pub(crate) name: &'a str,
    pub(crate) shape: &'a [i64],
    pub(crate) data: &'a [f32],
}

impl BBox {
    /// Width in pixels.
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    /// Height in pixels.
    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    /// Intersection over union with `other`; 0 for empty boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.width() * self.height() + other.width() * other.height() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Corners in model pixels mapped to frame pixels.
    fn from_model(t: &Transform, x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        let (x1, y1) = t.to_frame(x1, y1);
        let (x2, y2) = t.to_frame(x2, y2);
        BBox { x1, y1, x2, y2 }
    }
}

/// `ssd-tf`: scores `[1,N,C]`, boxes `[1,N,1,4]` normalised (ymin, xmin, ymax, xmax) relative to
/// the model input of `input_size` (w, h). Column k is class `k + class_offset`. Every
/// (anchor, class) pair that reaches its class's `min_score` is a candidate.
pub(crate) fn ssd_tf(
    scores: RawOutput<'_>,
    boxes: RawOutput<'_>,
    class_offset: usize,
    classes: &[Option<ClassRule>],
    input_size: (f32, f32),
    t: &Transform,
) -> Result<Vec<Candidate>, ShapeError> {
    let (n, c) = match *scores.shape {
        [1, n, c] if n >= 0 && c > 0 => (n as usize, c as usize),
        _ => return Err(shape_error(scores, "[1, N, C]")),
    };
    if scores.data.len() != n * c {
        return Err(shape_error(scores, "[1, N, C]"));
    }
    match *boxes.shape {
        [1, bn, 1, 4] if bn as usize == n && boxes.data.len() == n * 4 => {}
        _ => return Err(shape_error(boxes, &format!("[1, {n}, 1, 4]"))),
    }
    let (w, h) = input_size;
    let mut out = Vec::new();
    for (anchor, row) in scores.data.chunks_exact(c).enumerate() {
        for (col, &score) in row.iter().enumerate() {
            let class = col + class_offset;
            let Some(Some(rule)) = classes.get(class) else {
                continue;
            };
            if score < rule.min_score {
                continue;
            }
            let b = &boxes.data[anchor * 4..anchor * 4 + 4];
            out.push(Candidate {
                class,
                score,
                bbox: BBox::from_model(t, b[1] * w, b[0] * h, b[3] * w, b[2] * h),
            });
        }
    }
    Ok(out)
}

/// `yolo-ultralytics`: `[1, 4+C, N]`, rows cx, cy, w, h (input pixels) then C class scores. The
/// best class of each anchor is its candidate if it reaches that class's `min_score`.
pub(crate) fn yolo_ultralytics(
    output: RawOutput<'_>,
    classes: &[Option<ClassRule>],
    t: &Transform,
) -> Result<Vec<Candidate>, ShapeError> {
    let (rows, n) = match *output.shape {
        [1, rows, n] if rows > 4 && n >= 0 => (rows as usize, n as usize),
        _ => return Err(shape_error(output, "[1, 4+C, N]")),
    };
    if output.data.len() != rows * n {
        return Err(shape_error(output, "[1, 4+C, N]"));
    }
    let d = output.data;
    // Class-major loops read the tensor in memory order (rows of N) and vectorise.
    let mut best_score = d[4 * n..5 * n].to_vec();
    let mut best_class = vec![0usize; n];
    for c in 1..rows - 4 {
        let row = &d[(4 + c) * n..(5 + c) * n];
        for ((bs, bc), &s) in best_score.iter_mut().zip(best_class.iter_mut()).zip(row) {
            if s > *bs {
                *bs = s;
                *bc = c;
            }
        }
    }
    let mut out = Vec::new();
    for (i, (&score, &class)) in best_score.iter().zip(&best_class).enumerate() {
        let Some(Some(rule)) = classes.get(class) else {
            continue;
        };
        if score < rule.min_score {
            continue;
        }
        let (cx, cy, bw, bh) = (d[i], d[n + i], d[2 * n + i], d[3 * n + i]);
        out.push(Candidate {
            class,
            score,
            bbox: BBox::from_model(
                t,
                cx - bw / 2.0,
                cy - bh / 2.0,
                cx + bw / 2.0,
                cy + bh / 2.0,
            ),
        });
    }
    Ok(out)
}

/// `yolov5`: `[1, N, 5+C]`, columns cx, cy, w, h (input pixels), objectness, C class scores;
/// score = objectness x best class score.
pub(crate) fn yolov5(
    output: RawOutput<'_>,
    classes: &[Option<ClassRule>],
    t: &Transform,
) -> Result<Vec<Candidate>, ShapeError> {
    let cols = match *output.shape {
        [1, n, cols] if cols > 5 && n >= 0 && output.data.len() == n as usize * cols as usize => {
            cols as usize
        }
        _ => return Err(shape_error(output, "[1, N, 5+C]")),
    };
    let mut out = Vec::new();
    for row in output.data.chunks_exact(cols) {
        let (class, cls) =
            row[5..].iter().enumerate().fold(
                (0, f32::MIN),
                |best, (c, &s)| if s > best.1 { (c, s) } else { best },
            );
        let score = row[4] * cls;
        let Some(Some(rule)) = classes.get(class) else {
            continue;
        };
        if score < rule.min_score {
            continue;
        }
        let (cx, cy, bw, bh) = (row[0], row[1], row[2], row[3]);
        out.push(Candidate {
            class,
            score,
            bbox: BBox::from_model(
                t,
                cx - bw / 2.0,
                cy - bh / 2.0,
                cx + bw / 2.0,
                cy + bh / 2.0,
            ),
        });
    }
    Ok(out)
}

/// Class-aware greedy NMS: best first, a candidate is dropped when it overlaps a kept box of the
/// same class by more than `iou`; at most `max` are kept.
pub(crate) fn nms(mut candidates: Vec<Candidate>, iou: f32, max: usize) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() == max {
            break;
        }
        if kept
            .iter()
            .all(|k| k.class != c.class || k.bbox.iou(&c.bbox) <= iou)
        {
            kept.push(c);
        }
    }
    kept
}

fn shape_error(output: RawOutput<'_>, expected: &str) -> ShapeError {
    ShapeError {
        output: output.name.to_owned(),
        expected: expected.to_owned(),
        found: output.shape.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(w: u32, h: u32) -> Transform {
        Transform {
            scale_x: 1.0,
            scale_y: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
            frame_width: w,
            frame_height: h,
        }
    }

    fn rules(n: usize, min: f32) -> Vec<Option<ClassRule>> {
        (0..n)
            .map(|i| {
                Some(ClassRule {
                    label: format!("c{i}"),
                    min_score: min,
                })
            })
            .collect()
    }

    fn assert_close(a: BBox, b: BBox) {
        let d = [a.x1 - b.x1, a.y1 - b.y1, a.x2 - b.x2, a.y2 - b.y2];
        assert!(d.iter().all(|d| d.abs() < 1e-3), "{a:?} != {b:?}");
    }

    fn bbox(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn iou_of_half_overlapping_boxes_is_one_third() {
        let a = bbox(0.0, 0.0, 2.0, 1.0);
        let b = bbox(1.0, 0.0, 3.0, 1.0);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&bbox(5.0, 5.0, 6.0, 6.0)), 0.0);
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let c = |class, score, x| Candidate {
            class,
            score,
            bbox: bbox(x, 0.0, x + 10.0, 10.0),
        };
        let kept = nms(
            vec![
                c(0, 0.5, 1.0),
                c(0, 0.9, 0.0),
                c(1, 0.8, 0.0),
                c(0, 0.7, 50.0),
            ],
            0.5,
            10,
        );
        let got: Vec<(usize, f32)> = kept.iter().map(|k| (k.class, k.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.8), (0, 0.7)]);
        assert_eq!(nms(vec![c(0, 0.9, 0.0), c(1, 0.8, 0.0)], 0.5, 1).len(), 1);
    }

    #[test]
    fn ssd_tf_reads_normalised_yx_boxes_and_offsets_classes() {
        // 2 anchors, 2 columns; column k is class k+1.
        let scores = [0.1, 0.9, 0.6, 0.2];
        let boxes = [0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 1.0, 1.0];
        let mut classes = rules(3, 0.5);
        classes[0] = None;
        let got = ssd_tf(
            RawOutput {
                name: "s",
                shape: &[1, 2, 2],
                data: &scores,
            },
            RawOutput {
                name: "b",
                shape: &[1, 2, 1, 4],
                data: &boxes,
            },
            1,
            &classes,
            (100.0, 200.0),
            &identity(100, 200),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].class, 2);
        assert_close(got[0].bbox, bbox(20.0, 20.0, 60.0, 100.0));
        assert_eq!(got[1].class, 1);
        assert_close(got[1].bbox, bbox(0.0, 0.0, 100.0, 200.0));
    }

    #[test]
    fn ssd_tf_refuses_mismatched_shapes() {
        let err = ssd_tf(
            RawOutput {
                name: "s",
                shape: &[1, 2, 2],
                data: &[0.0; 4],
            },
            RawOutput {
                name: "b",
                shape: &[1, 3, 1, 4],
                data: &[0.0; 12],
            },
            0,
            &rules(2, 0.5),
            (1.0, 1.0),
            &identity(1, 1),
        )
        .unwrap_err();
        assert_eq!(err.output, "b");
        assert_eq!(err.found, vec![1, 3, 1, 4]);
    }

    #[test]
    fn yolo_ultralytics_takes_the_best_class_per_anchor() {
        // [1, 4+2, 2]: anchor 0 at (50,50) 20x10 class 1 0.8; anchor 1 below threshold.
        #[rustfmt::skip]
        let data = [
            50.0, 10.0, // cx
            50.0, 10.0, // cy
            20.0, 4.0,  // w
            10.0, 4.0,  // h
            0.3, 0.1,   // class 0
            0.8, 0.2,   // class 1
        ];
        let got = yolo_ultralytics(
            RawOutput {
                name: "o",
                shape: &[1, 6, 2],
                data: &data,
            },
            &rules(2, 0.25),
            &identity(100, 100),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].class, got[0].score), (1, 0.8));
        assert_eq!(got[0].bbox, bbox(40.0, 45.0, 60.0, 55.0));
    }

    #[test]
    fn yolov5_multiplies_objectness_and_class_score() {
        let data = [50.0, 50.0, 20.0, 10.0, 0.5, 0.2, 0.9];
        let got = yolov5(
            RawOutput {
                name: "o",
                shape: &[1, 1, 7],
                data: &data,
            },
            &rules(2, 0.4),
            &identity(100, 100),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].class, 1);
        assert!((got[0].score - 0.45).abs() < 1e-6);
    }
}
