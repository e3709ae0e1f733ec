use runner::data::*;
use runner::recipe::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(&args[1]);
    let diff = match args.get(2).map(|s| s.as_str()) { Some("easy") => Difficulty::Easy, Some("hard") => Difficulty::Hard, _ => Difficulty::Medium };
    let ids: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let cfg = SynthConfig { identities: ids, difficulty: diff, ..SynthConfig::default() };
    let t = std::time::Instant::now();
    let s = generate(&cfg, &out).unwrap();
    eprintln!("gen {:?} {:.1}s", s.train_images, t.elapsed().as_secs_f64());
    let d = CourseData::open(&out).unwrap();
    let t = std::time::Instant::now();
    let acc = raw_pixel_nn_accuracy(&d).unwrap();
    eprintln!("nn acc {acc:.4} ({:.1}s) fp {}", t.elapsed().as_secs_f64(), fingerprint(&out).unwrap());
    // grid of first identities' train images
    let mut grid = image::RgbImage::new(64*10, 64*8);
    for (r, cls) in (0..8).enumerate() {
        let imgs: Vec<_> = d.train.iter().filter(|s| s.label == cls).take(10).collect();
        for (c, s) in imgs.iter().enumerate() {
            let im = image::open(&s.path).unwrap().to_rgb8();
            image::imageops::overlay(&mut grid, &im, (c*64) as i64, (r*64) as i64);
        }
    }
    grid.save(out.with_extension("grid.png")).unwrap();
}
