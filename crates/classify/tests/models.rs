//! Classifiers against references computed with onnxruntime (models/reference_scores.py):
//! the tiny generated test models (every output kind, layout, colour order and resize
//! policy), the broken ones (each load error), and the bundled open_nsfw.

use std::path::{Path, PathBuf};
use std::process::Command;

use firebreak_classify::{Classification, Classifier, ClassifierSet, ModelError, RgbImage};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn reference(name: &str) -> Value {
    let path = models().join("test/reference").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn image(file: &str) -> (u32, u32, Vec<u8>) {
    let path = models().join("test/images").join(file);
    let img = firebreak_hashing::decode::decode_file(&path).unwrap();
    let rgb = img.to_rgb();
    (img.width as u32, img.height as u32, rgb)
}

fn tensor_sha256(t: &[f32]) -> String {
    let bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn test_models_match_onnxruntime_exactly() {
    let refs = reference("test_models.json");
    let mut checked = 0;
    let mut exact = 0;
    for (name, model) in refs["models"].as_object().unwrap() {
        let classifier = Classifier::load(&models().join("test").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for r in model["results"].as_array().unwrap() {
            let file = r["image"].as_str().unwrap();
            let (w, h, rgb) = image(file);
            let frame = RgbImage {
                width: w,
                height: h,
                data: &rgb,
            };
            let (tensor, placement) = classifier.preprocess(&frame);
            // Bit-identical to Pillow's preprocessing (the reference tensor's hash).
            assert_eq!(
                tensor_sha256(&tensor),
                r["input_sha256"].as_str().unwrap(),
                "{name} {file}: input tensor"
            );
            exact += 1;
            assert_eq!(
                (
                    placement.scaled.0,
                    placement.scaled.1,
                    placement.offset.0,
                    placement.offset.1
                ),
                (
                    r["placed"]["scaled_size"][0].as_u64().unwrap() as u32,
                    r["placed"]["scaled_size"][1].as_u64().unwrap() as u32,
                    r["placed"]["offset"][0].as_i64().unwrap(),
                    r["placed"]["offset"][1].as_i64().unwrap()
                ),
                "{name} {file}: placement"
            );
            let raw = classifier.run_tensor(tensor).unwrap();
            let want: Vec<f64> = r["output"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(raw.len(), want.len());
            for (g, w) in raw.iter().zip(&want) {
                assert!(
                    close(f64::from(*g), *w, 1e-6),
                    "{name} {file}: raw {g} vs {w}"
                );
            }
            let c = classifier.postprocess(&raw, placement, (w, h));
            for (label, score) in &c.scores {
                let want = r["scores"][label].as_f64().unwrap();
                assert!(
                    close(f64::from(*score), want, 1e-5),
                    "{name} {file} {label}: {score} vs {want}"
                );
            }
            let want_categories = r["categories"].as_array().unwrap();
            assert_eq!(c.categories.len(), want_categories.len());
            for want in want_categories {
                let got = c
                    .categories
                    .iter()
                    .find(|g| g.label == want["label"].as_str().unwrap())
                    .unwrap();
                assert_eq!(got.category, want["category"].as_str().unwrap());
                assert_eq!(
                    got.flagged,
                    want["flagged"].as_bool().unwrap(),
                    "{name} {file}"
                );
            }
            if let Some(dets) = r["detections"].as_array() {
                let rows: Vec<(u64, &str)> = dets
                    .iter()
                    .map(|d| (d["row"].as_u64().unwrap(), d["label"].as_str().unwrap()))
                    .collect();
                let got: Vec<(u64, &str)> = c
                    .detections
                    .iter()
                    .map(|d| (d.row as u64, d.label.as_str()))
                    .collect();
                assert_eq!(
                    got, rows,
                    "{name} {file}: detections after threshold and NMS"
                );
                for (g, d) in c.detections.iter().zip(dets) {
                    for i in 0..4 {
                        let want = d["box_xyxy_source"][i].as_f64().unwrap();
                        assert!(
                            close(f64::from(g.box_source[i]), want, 1e-3),
                            "{name} {file}: box {:?} vs {}",
                            g.box_source,
                            d["box_xyxy_source"]
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 60, "{checked} model/image pairs");
    // Most input tensors are bit-identical to Pillow's (see preprocess::resize_bilinear).
    eprintln!("{exact} of {checked} input tensors bit-identical to the reference");
    assert!(
        exact * 10 >= checked * 9,
        "{exact} of {checked} input tensors exact"
    );
}

#[test]
fn bad_models_fail_at_load_with_the_right_error() {
    let dir = models().join("test/bad");
    let load = |n: &str| {
        Classifier::load(&dir.join(n))
            .err()
            .unwrap_or_else(|| panic!("{n} loaded"))
    };
    assert!(matches!(
        load("missing_file"),
        ModelError::FileMissing { .. }
    ));
    assert!(matches!(
        load("sha256_mismatch"),
        ModelError::Checksum { .. }
    ));
    assert!(matches!(
        load("wrong_input_name"),
        ModelError::InputName { .. }
    ));
    assert!(matches!(
        load("wrong_output_name"),
        ModelError::OutputName { .. }
    ));
    assert!(
        matches!(
            load("shape_mismatch"),
            ModelError::Shape {
                field: "input.shape",
                ..
            }
        ),
        "{}",
        load("shape_mismatch")
    );
    let e = load("unknown_op");
    assert!(matches!(e, ModelError::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("FirebreakNoSuchOp"), "{e}");
    // A manifest with an unknown field or inconsistent values.
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(models().join("test/softmax_nchw_rgb/model.toml")).unwrap();
    std::fs::write(
        tmp.path().join("model.toml"),
        format!("{good}\nthreshold = 3\n"),
    )
    .unwrap();
    assert!(matches!(
        Classifier::load(tmp.path()).unwrap_err(),
        ModelError::Manifest { .. }
    ));
    std::fs::write(
        tmp.path().join("model.toml"),
        good.replace("kind = \"softmax\"", "kind = \"yolo\""),
    )
    .unwrap();
    assert!(matches!(
        Classifier::load(tmp.path()).unwrap_err(),
        ModelError::Invalid { .. }
    ));
}

/// Runs `models/fetch.sh MODEL` and returns the model's directory.
fn fetch(model: &str) -> PathBuf {
    let ok = Command::new(models().join("fetch.sh"))
        .arg(model)
        .status()
        .unwrap()
        .success();
    assert!(ok, "models/fetch.sh {model}");
    models().join(model)
}

fn fetch_open_nsfw() -> PathBuf {
    fetch("open_nsfw")
}

/// Scores every reference image with `classifier` and checks the input tensor and the
/// label scores against onnxruntime's (`refs`); returns each file's classification.
/// Pillow 13 resizes 200x300 -> 256x256 with its vertical pass first (1-level
/// differences on noise), so that one tensor may differ; every other is bit-identical.
fn scores_match_reference(classifier: &Classifier, refs: &Value) -> Vec<(String, Classification)> {
    let mut out = Vec::new();
    for r in refs["results"].as_array().unwrap() {
        let source = r["source"].as_str().unwrap();
        let file = Path::new(source).file_name().unwrap().to_str().unwrap();
        let (w, h, rgb) = image(file);
        let frame = RgbImage {
            width: w,
            height: h,
            data: &rgb,
        };
        let (tensor, _) = classifier.preprocess(&frame);
        let exact = tensor_sha256(&tensor) == r["input"]["sha256"].as_str().unwrap();
        assert!(
            exact || file == "noise_200x300.png",
            "{file}: input tensor differs"
        );
        let tol = if exact { 1e-4 } else { 1e-2 };
        let c = classifier.classify(&frame).unwrap();
        for (label, score) in &c.scores {
            let want = r["scores"][label].as_f64().unwrap();
            assert!(
                close(f64::from(*score), want, tol),
                "{file} {label}: tract {score} vs onnxruntime {want}"
            );
        }
        out.push((file.to_owned(), c));
    }
    out
}

/// A `.npy` file of little-endian float32 (numpy format 1.0, C order).
fn read_npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn open_nsfw_matches_onnxruntime() {
    let classifier = Classifier::load(&fetch_open_nsfw()).unwrap();
    let refs = reference("open_nsfw.json");
    for (file, c) in scores_match_reference(&classifier, &refs) {
        // Plain synthetic frames are not flagged.
        assert!(
            c.categories
                .iter()
                .all(|c| c.category == "sexual" && !c.flagged),
            "{file}: {:?}",
            c.categories
        );
        assert_eq!(c.model, "open_nsfw");
    }
    // On the exact stored input tensors, independent of preprocessing.
    for (npy, image_name) in [
        ("gradient_320x240.input.npy", "gradient_320x240.png"),
        ("noise_200x300.input.npy", "noise_200x300.png"),
    ] {
        let tensor = read_npy(&models().join("test/reference").join(npy));
        let raw = classifier.run_tensor(tensor).unwrap();
        let r = refs["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(image_name))
            .unwrap();
        for (g, w) in raw.iter().zip(r["output"]["data"].as_array().unwrap()) {
            assert!(
                close(f64::from(*g), w.as_f64().unwrap(), 1e-4),
                "{npy}: {g} vs {w}"
            );
        }
    }
}

/// The `weapon` model converted by models/efficientnet_lite0/convert.py scores like
/// onnxruntime (test/reference/efficientnet_lite0.json) and flags none of the plain
/// synthetic images.
#[test]
fn efficientnet_lite0_matches_onnxruntime() {
    let classifier = Classifier::load(&fetch("efficientnet_lite0")).unwrap();
    let refs = reference("efficientnet_lite0.json");
    let results = scores_match_reference(&classifier, &refs);
    assert_eq!(results.len(), 8);
    for (file, c) in results {
        assert_eq!(c.scores.len(), 2, "{file}");
        assert_eq!(c.categories.len(), 1);
        assert_eq!(c.categories[0].category, "weapon");
        assert!(!c.categories[0].flagged, "{file}: {:?}", c.categories);
        assert_eq!(c.model, "efficientnet_lite0");
    }
}

#[test]
fn batched_frames_score_like_single_frames() {
    let mut classifier = Classifier::load(&fetch_open_nsfw()).unwrap();
    assert!(
        classifier.batches(),
        "open_nsfw has a symbolic batch dimension"
    );
    let names = [
        "grey_320x240.png",
        "colour_320x240.png",
        "gradient_320x240.png",
        "noise_200x300.png",
        "framed_200x300.png",
    ];
    let images: Vec<(u32, u32, Vec<u8>)> = names.iter().map(|n| image(n)).collect();
    let frames: Vec<RgbImage<'_>> = images
        .iter()
        .map(|(w, h, d)| RgbImage {
            width: *w,
            height: *h,
            data: d,
        })
        .collect();
    let singles: Vec<_> = frames
        .iter()
        .map(|f| classifier.classify(f).unwrap())
        .collect();
    // Batches of 4 (one full batch and one frame alone) and of 8 (no full batch), and
    // 2 (two full batches and one alone).
    for size in [4, 8, 2] {
        classifier.set_batch(size).unwrap();
        assert_eq!(classifier.batch(), size);
        let many = classifier.classify_many(&frames).unwrap();
        assert_eq!(many.len(), 5);
        for (single, batched) in singles.iter().zip(&many) {
            assert_eq!(single.scores.len(), batched.scores.len());
            for ((l1, s1), (l2, s2)) in single.scores.iter().zip(&batched.scores) {
                assert_eq!(l1, l2);
                assert!(
                    (s1 - s2).abs() < 1e-5,
                    "batch {size}, {l1}: single {s1} vs {s2}"
                );
            }
        }
    }
    assert!(
        classifier.set_batch(65).is_err(),
        "a batch above the maximum"
    );
    classifier.set_batch(1).unwrap();
    assert_eq!(classifier.batch(), 1);
    // Models with a fixed batch of 1 fall back to one frame at a time.
    let mut fixed = Classifier::load(&models().join("test/softmax_nchw_rgb")).unwrap();
    assert!(!fixed.batches());
    fixed.set_batch(4).unwrap();
    assert_eq!(fixed.batch(), 1);
    assert_eq!(fixed.classify_many(&frames).unwrap().len(), 5);
}

#[test]
fn a_set_resizes_once_per_geometry_and_equals_single_models() {
    let names = [
        "channel0_nchw_rgb",
        "channel0_nchw_bgr",
        "channel0_nhwc_rgb",
        "channel0_nhwc_bgr",
        "sigmoid_nhwc_bgr",
        "softmax_nchw_rgb",
        "corners_stretch",
        "corners_crop",
        "corners_letterbox",
        "yolo_nchw_rgb",
    ];
    let models: Vec<Classifier> = names
        .iter()
        .map(|n| Classifier::load(&models().join("test").join(n)).unwrap())
        .collect();
    let set = ClassifierSet::new(models.clone());
    // 8x8 stretch (6 models), 16x16 stretch, 16x16 from a 24x24 crop, 16x16 letterbox
    // padded with 114 (2 models).
    assert_eq!(set.geometries(), 4);
    for file in [
        "colour_320x240.png",
        "noise_200x300.png",
        "framed_200x300.png",
    ] {
        let (w, h, px) = image(file);
        let frame = RgbImage {
            width: w,
            height: h,
            data: &px,
        };
        let results = set.classify(&frame);
        assert_eq!(results.len(), names.len());
        for (model, got) in models.iter().zip(results) {
            assert_eq!(got.model, model.manifest().name);
            assert_eq!(
                got.result.unwrap(),
                model.classify(&frame).unwrap(),
                "{file}"
            );
        }
    }
}

#[test]
fn intra_op_threads_give_the_same_scores() {
    let dir = fetch_open_nsfw();
    let single = Classifier::load(&dir).unwrap();
    let mut threaded = single.clone();
    threaded.set_threads(2);
    let (w, h, px) = image("gradient_320x240.png");
    let frame = RgbImage {
        width: w,
        height: h,
        data: &px,
    };
    let a = single.classify(&frame).unwrap();
    let b = threaded.classify(&frame).unwrap();
    for ((l1, s1), (l2, s2)) in a.scores.iter().zip(&b.scores) {
        assert_eq!(l1, l2);
        assert!((s1 - s2).abs() < 1e-5, "{l1}: {s1} vs {s2}");
    }
}
