//! Measures tract settings for open_nsfw on this machine: ONNX load vs a decluttered
//! NNEF copy, and inference with tract's single-thread and 2-thread executors.
//! `cargo run --release -p firebreak-classify --example tract_settings`
use std::time::Instant;

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> TractResult<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/open_nsfw/open-nsfw.onnx"
    );
    let shape = tvec![1usize, 224, 224, 3];
    let t = Instant::now();
    let mut m = tract_onnx::onnx().model_for_path(path)?;
    m.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape.clone()))?;
    let parsed = t.elapsed();
    let decl = m.into_typed()?.into_decluttered()?;
    let decluttered = t.elapsed();
    let opt = decl.clone().into_optimized()?;
    let optimized = t.elapsed();
    println!("onnx: parse {parsed:?}, +declutter {decluttered:?}, +optimise {optimized:?}");

    let nnef = tract_nnef::nnef().with_onnx();
    let tar = nnef.write_to_tar(&decl, Vec::new())?;
    println!("nnef tar {} bytes", tar.len());
    let t = Instant::now();
    let back = nnef.model_for_read(&mut &tar[..])?;
    let loaded = t.elapsed();
    match back.into_optimized() {
        Ok(_) => println!("nnef: load {loaded:?}, +optimise {:?}", t.elapsed()),
        Err(e) => println!("nnef: load {loaded:?}, optimise failed: {e:#}"),
    }

    let plan = opt.into_runnable()?;
    let input: Tensor =
        tract_ndarray::Array4::<f32>::from_shape_fn((1, 224, 224, 3), |(_, y, x, c)| {
            ((x * 7 + y * 3 + c * 11) % 255) as f32 - 117.0
        })
        .into();
    for (name, exec) in [
        ("single", Executor::SingleThread),
        ("multithread(2)", Executor::multithread(2)),
    ] {
        let mut times = Vec::new();
        for _ in 0..25 {
            let t = Instant::now();
            multithread_tract_scope(exec.clone(), || plan.run(tvec![input.clone().into()]))?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{name}: median {:.1} ms, min {:.1} ms",
            median(times.clone()),
            times.iter().cloned().fold(f64::MAX, f64::min)
        );
    }
    Ok(())
}
