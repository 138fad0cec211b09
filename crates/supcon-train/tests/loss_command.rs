//! `supcon loss --method infonce | nce | swav | cmc | cpc | invspread` against independent float64 implementations of
//! the formulas (dense, written here from the papers' definitions), with gradients checked by
//! central differences of those implementations: the loss to 1e-6 relative, gradients to 1e-4
//! of their largest entry.

mod common;

use common::{run, supcon};
use ndarray::{Array1, Array2, Array3};
use ndarray_npy::{read_npy, write_npy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random<D: ndarray::Dimension, Sh: ndarray::ShapeBuilder<Dim = D>>(
    shape: Sh,
    rng: &mut ChaCha8Rng,
) -> ndarray::Array<f64, D> {
    ndarray::Array::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
}

/// The negatives of query `b`.
type NegativesOf<'a> = &'a dyn Fn(usize) -> Vec<Array1<f64>>;

fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn dot(a: ndarray::ArrayView1<'_, f64>, b: ndarray::ArrayView1<'_, f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central differences of `loss` at `x`.
fn numeric_gradient<D: ndarray::Dimension>(
    x: &ndarray::Array<f64, D>,
    loss: impl Fn(&ndarray::Array<f64, D>) -> f64,
) -> ndarray::Array<f64, D> {
    let h = 1e-6;
    let mut grad = x.clone();
    for (i, g) in grad.iter_mut().enumerate() {
        let shifted = |delta: f64| {
            let mut y = x.clone();
            y.as_slice_mut().expect("standard layout")[i] += delta;
            loss(&y)
        };
        *g = (shifted(h) - shifted(-h)) / (2.0 * h);
    }
    grad
}

fn assert_close<D: ndarray::Dimension>(
    what: &str,
    got: &ndarray::Array<f64, D>,
    want: &ndarray::Array<f64, D>,
) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "{what}: off by {worst} (largest {scale})"
    );
}

/// Runs `supcon loss ARGS` and returns the printed loss and anchors.
fn loss_command(args: &[&std::ffi::OsStr]) -> (f64, u64) {
    let output = run(supcon().arg("loss").args(args), true);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        value["loss"].as_f64().unwrap(),
        value["anchors"].as_u64().unwrap(),
    )
}

#[test]
fn infonce_matches_the_formula_with_shared_and_per_query_negatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (b, k, m, d, tau) = (5, 7, 3, 4, 0.2);
    let q: Array2<f64> = random((b, d), &mut rng);
    let pos: Array2<f64> = random((b, d), &mut rng);
    let shared: Array2<f64> = random((k, d), &mut rng);
    let per_query: Array3<f64> = random((b, m, d), &mut rng);
    // ℓ_b = −log(e^{q·k/τ} / (e^{q·k/τ} + Σ_j e^{q·n_j/τ})), mean over b.
    let loss = |q: &Array2<f64>, negatives: NegativesOf<'_>| -> f64 {
        (0..b)
            .map(|i| {
                let positive = dot(q.row(i), pos.row(i)) / tau;
                let logits = std::iter::once(positive)
                    .chain(negatives(i).iter().map(|n| dot(q.row(i), n.view()) / tau))
                    .collect::<Vec<_>>();
                log_sum_exp(logits.iter().copied()) - positive
            })
            .sum::<f64>()
            / b as f64
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("q.npy"), &q).unwrap();
    write_npy(file("k.npy"), &pos).unwrap();
    write_npy(file("shared.npy"), &shared).unwrap();
    write_npy(file("per_query.npy"), &per_query).unwrap();
    let shared_rows = |_: usize| shared.rows().into_iter().map(|r| r.to_owned()).collect();
    let per_query_rows = |i: usize| {
        per_query
            .index_axis(ndarray::Axis(0), i)
            .rows()
            .into_iter()
            .map(|r| r.to_owned())
            .collect()
    };
    let cases: [(&str, NegativesOf<'_>); 2] = [
        ("shared.npy", &shared_rows),
        ("per_query.npy", &per_query_rows),
    ];
    for (negatives, rows) in cases {
        let (got, anchors) = loss_command(&[
            "--method".as_ref(),
            "infonce".as_ref(),
            "--features".as_ref(),
            file("q.npy").as_os_str(),
            "--positives".as_ref(),
            file("k.npy").as_os_str(),
            "--negatives".as_ref(),
            file(negatives).as_os_str(),
            "--temperature".as_ref(),
            "0.2".as_ref(),
            "--grad-out".as_ref(),
            file("g.npy").as_os_str(),
        ]);
        let want = loss(&q, rows);
        assert_eq!(anchors, b as u64);
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "{negatives}: {got} vs {want}"
        );
        let grad: Array2<f64> = read_npy(file("g.npy")).unwrap();
        assert_close(negatives, &grad, &numeric_gradient(&q, |q| loss(q, rows)));
    }
}

#[test]
fn nce_matches_instdisc_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (b, m, d, tau, n, z, lambda) = (4, 6, 5, 0.07, 1000usize, 2500.0, 3.0);
    let q: Array2<f64> = random((b, d), &mut rng) * 0.3;
    let pos: Array2<f64> = random((b, d), &mut rng) * 0.3;
    let neg: Array3<f64> = random((b, m, d), &mut rng) * 0.3;
    // P(i|v) = e^{v_i·v/τ}/Z, h = P/(P + m/N), ℓ = −log h(k) − Σ_j log(1 − h(n_j)), plus the
    // proximal term λ‖v − k‖².
    let loss = |q: &Array2<f64>| -> f64 {
        let noise = m as f64 / n as f64;
        let h = |p: f64| p / (p + noise);
        (0..b)
            .map(|i| {
                let p = |row: ndarray::ArrayView1<'_, f64>| (dot(q.row(i), row) / tau).exp() / z;
                let drift = &q.row(i) - &pos.row(i);
                -h(p(pos.row(i))).ln()
                    - (0..m)
                        .map(|j| (1.0 - h(p(neg.slice(ndarray::s![i, j, ..])))).ln())
                        .sum::<f64>()
                    + lambda * dot(drift.view(), drift.view())
            })
            .sum::<f64>()
            / b as f64
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("q.npy"), &q).unwrap();
    write_npy(file("k.npy"), &pos).unwrap();
    write_npy(file("n.npy"), &neg).unwrap();
    let (got, anchors) = loss_command(&[
        "--method".as_ref(),
        "nce".as_ref(),
        "--features".as_ref(),
        file("q.npy").as_os_str(),
        "--positives".as_ref(),
        file("k.npy").as_os_str(),
        "--negatives".as_ref(),
        file("n.npy").as_os_str(),
        "--data-size".as_ref(),
        "1000".as_ref(),
        "--nce-z".as_ref(),
        "2500".as_ref(),
        "--proximal".as_ref(),
        "3".as_ref(),
        "--temperature".as_ref(),
        "0.07".as_ref(),
        "--grad-out".as_ref(),
        file("g.npy").as_os_str(),
    ]);
    let want = loss(&q);
    assert_eq!(anchors, b as u64);
    assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    let grad: Array2<f64> = read_npy(file("g.npy")).unwrap();
    assert_close("nce", &grad, &numeric_gradient(&q, loss));
}

/// SwAV's `distributed_sinkhorn` on one device: `[B, K]` scores → `[B, K]` codes.
fn sinkhorn(scores: &Array2<f64>, epsilon: f64, iterations: usize) -> Array2<f64> {
    let (b, k) = scores.dim();
    let mut q = scores.t().mapv(|s| (s / epsilon).exp()); // [K, B]
    let total = q.sum();
    q /= total;
    for _ in 0..iterations {
        for mut row in q.rows_mut() {
            let sum = row.sum();
            row /= sum * k as f64;
        }
        for mut column in q.columns_mut() {
            let sum = column.sum();
            column /= sum * b as f64;
        }
    }
    q *= b as f64;
    q.t().to_owned()
}

#[test]
fn swav_matches_the_swapped_prediction_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (b, s, d, k, a, tau, eps) = (6, 4, 5, 7, 2, 0.1, 0.05);
    let z: Array3<f64> = random((b, s, d), &mut rng);
    let c: Array2<f64> = random((k, d), &mut rng);
    let scores = |z: &Array3<f64>, c: &Array2<f64>, crop: usize| -> Array2<f64> {
        z.index_axis(ndarray::Axis(1), crop).dot(&c.t())
    };
    // Codes of the assignment crops, constants for the gradient.
    let codes: Vec<Array2<f64>> = (0..a)
        .map(|crop| sinkhorn(&scores(&z, &c, crop), eps, 3))
        .collect();
    // L = (1/A) Σ_a (1/(S−1)) Σ_{s≠a} mean_b(−Σ_k q_a[b,k] log softmax(s_s[b,:]/τ)[k]).
    let loss = |z: &Array3<f64>, c: &Array2<f64>| -> f64 {
        let mut total = 0.0;
        for (crop_a, q) in codes.iter().enumerate() {
            for crop_s in (0..s).filter(|&x| x != crop_a) {
                let logits = scores(z, c, crop_s) / tau;
                for image in 0..b {
                    let row = logits.row(image);
                    let lse = log_sum_exp(row.iter().copied());
                    total -= (0..k).map(|j| q[[image, j]] * (row[j] - lse)).sum::<f64>() / b as f64;
                }
            }
        }
        total / (a as f64 * (s - 1) as f64)
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("z.npy"), &z).unwrap();
    write_npy(file("c.npy"), &c).unwrap();
    let (got, anchors) = loss_command(&[
        "--method".as_ref(),
        "swav".as_ref(),
        "--features".as_ref(),
        file("z.npy").as_os_str(),
        "--prototypes".as_ref(),
        file("c.npy").as_os_str(),
        "--grad-out".as_ref(),
        file("gz.npy").as_os_str(),
        "--prototype-grad-out".as_ref(),
        file("gc.npy").as_os_str(),
    ]);
    let want = loss(&z, &c);
    assert_eq!(anchors, (b * a) as u64);
    assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    let gz: Array3<f64> = read_npy(file("gz.npy")).unwrap();
    let gc: Array2<f64> = read_npy(file("gc.npy")).unwrap();
    assert_close("features", &gz, &numeric_gradient(&z, |z| loss(z, &c)));
    assert_close("prototypes", &gc, &numeric_gradient(&c, |c| loss(&z, c)));
}

#[test]
fn semi_supervised_supcon_matches_the_formula_and_without_labels_is_simclr() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (b, v, d, tau) = (6, 2, 4, 0.5);
    let f: Array3<f64> = random((b, v, d), &mut rng);
    // Samples 2 and 5 have no label (-1): each is a class of its own.
    let labels = Array1::from(vec![0i64, 1, -1, 0, 1, -1]);
    let positive = |(bi, vi): (usize, usize), (bj, vj): (usize, usize)| {
        (bi, vi) != (bj, vj)
            && if labels[bi] < 0 || labels[bj] < 0 {
                bi == bj
            } else {
                labels[bi] == labels[bj]
            }
    };
    // L_out: mean over anchors of LSE_{a≠i} s_ia − mean_{p∈P(i)} s_ip, s = f_i·f_j/τ.
    let loss = |f: &Array3<f64>| -> f64 {
        let rows: Vec<(usize, usize)> = (0..v)
            .flat_map(|vi| (0..b).map(move |bi| (bi, vi)))
            .collect();
        let s = |i: (usize, usize), j: (usize, usize)| {
            dot(
                f.slice(ndarray::s![i.0, i.1, ..]),
                f.slice(ndarray::s![j.0, j.1, ..]),
            ) / tau
        };
        let mut total = 0.0;
        for &i in &rows {
            let others = rows.iter().filter(|&&j| j != i);
            let lse = log_sum_exp(others.map(|&j| s(i, j)));
            let positives: Vec<f64> = rows
                .iter()
                .filter(|&&j| positive(i, j))
                .map(|&j| s(i, j))
                .collect();
            total += lse - positives.iter().sum::<f64>() / positives.len() as f64;
        }
        total / rows.len() as f64
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("f.npy"), &f).unwrap();
    write_npy(file("labels.npy"), &labels).unwrap();
    write_npy(file("none.npy"), &Array1::from(vec![-1i64; b])).unwrap();
    let supcon_args = |labels: Option<&std::path::Path>, grad: &str| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--features".into(),
            file("f.npy").into(),
            "--temperature".into(),
            tau.to_string().into(),
            "--grad-out".into(),
            file(grad).into(),
        ];
        if let Some(labels) = labels {
            args.extend(["--labels".into(), labels.into()]);
        }
        args
    };
    let run_loss = |args: Vec<std::ffi::OsString>| {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        loss_command(&refs)
    };
    let labels_file = file("labels.npy");
    let (got, anchors) = run_loss(supcon_args(Some(&labels_file), "g.npy"));
    let want = loss(&f);
    assert_eq!(anchors, (b * v) as u64);
    assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    let g: Array3<f64> = read_npy(file("g.npy")).unwrap();
    assert_close("features", &g, &numeric_gradient(&f, loss));
    // Every label -1: SimCLR's loss, to the bit.
    let none_file = file("none.npy");
    let unlabeled = run_loss(supcon_args(Some(&none_file), "g1.npy"));
    let simclr = run_loss(supcon_args(None, "g2.npy"));
    assert_eq!(unlabeled, simclr);
    let (g1, g2): (Array3<f64>, Array3<f64>) = (
        read_npy(file("g1.npy")).unwrap(),
        read_npy(file("g2.npy")).unwrap(),
    );
    assert_eq!(g1, g2);
}

#[test]
fn cmc_matches_the_cross_view_formula_for_both_pairings() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (v, b, d, tau) = (3, 5, 4, 0.2);
    let x: Array3<f64> = random((v, b, d), &mut rng);
    // L = Σ_{(i,j)} (1/B) Σ_b (log Σ_c e^{ẑ_i[b]·ẑ_j[c]/τ} − ẑ_i[b]·ẑ_j[b]/τ), ẑ = z/‖z‖.
    let loss = |x: &Array3<f64>, pairs: &[(usize, usize)]| -> f64 {
        let unit = |i: usize, c: usize| {
            let row = x.slice(ndarray::s![i, c, ..]);
            &row / row.dot(&row).sqrt()
        };
        let mut total = 0.0;
        for &(i, j) in pairs {
            for anchor in 0..b {
                let scores: Vec<f64> = (0..b)
                    .map(|c| unit(i, anchor).dot(&unit(j, c)) / tau)
                    .collect();
                total += (log_sum_exp(scores.iter().copied()) - scores[anchor]) / b as f64;
            }
        }
        total
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("views.npy"), &x).unwrap();
    let core = [(0, 1), (1, 0), (0, 2), (2, 0)];
    let full = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)];
    for (pairing, pairs) in [("core-view", &core[..]), ("full-graph", &full[..])] {
        let (got, anchors) = loss_command(&[
            "--method".as_ref(),
            "cmc".as_ref(),
            "--pairing".as_ref(),
            pairing.as_ref(),
            "--temperature".as_ref(),
            "0.2".as_ref(),
            "--normalize".as_ref(),
            "--features".as_ref(),
            file("views.npy").as_os_str(),
            "--grad-out".as_ref(),
            file("g.npy").as_os_str(),
        ]);
        let want = loss(&x, pairs);
        assert_eq!(anchors, (pairs.len() * b) as u64);
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "{pairing}: {got} vs {want}"
        );
        let g: Array3<f64> = read_npy(file("g.npy")).unwrap();
        assert_close(pairing, &g, &numeric_gradient(&x, |x| loss(x, pairs)));
    }
}

#[test]
fn invspread_matches_the_paper_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (b, d, tau) = (4, 3, 0.3);
    let x: Array3<f64> = random((b, 2, d), &mut rng);
    // Rows j = 2·image + view, ẑ = z/‖z‖; each classified among the other 2B − 1 rows:
    // ℓ_j = −log P(j's other view) − Σ_{other instances k} log(1 − P_jk).
    let loss = |x: &Array3<f64>| -> f64 {
        let unit = |j: usize| {
            let row = x.slice(ndarray::s![j / 2, j % 2, ..]);
            &row / row.dot(&row).sqrt()
        };
        let n = 2 * b;
        let mut total = 0.0;
        for j in 0..n {
            let scores: Vec<f64> = (0..n).map(|k| unit(j).dot(&unit(k)) / tau).collect();
            let lse = log_sum_exp((0..n).filter(|&k| k != j).map(|k| scores[k]));
            total -= scores[j ^ 1] - lse;
            for k in (0..n).filter(|&k| k != j && k != (j ^ 1)) {
                total -= (1.0 - (scores[k] - lse).exp()).ln();
            }
        }
        total / n as f64
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("features.npy"), &x).unwrap();
    let (got, anchors) = loss_command(&[
        "--method".as_ref(),
        "invspread".as_ref(),
        "--temperature".as_ref(),
        "0.3".as_ref(),
        "--normalize".as_ref(),
        "--features".as_ref(),
        file("features.npy").as_os_str(),
        "--grad-out".as_ref(),
        file("g.npy").as_os_str(),
    ]);
    let want = loss(&x);
    assert_eq!(anchors, (2 * b) as u64);
    assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    let g: Array3<f64> = read_npy(file("g.npy")).unwrap();
    assert_close("invspread", &g, &numeric_gradient(&x, loss));
}

#[test]
fn cpc_matches_the_grid_infonce_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (b, t, k, d) = (2, 4, 2, 3);
    let p: ndarray::Array4<f64> = random((b, t, k, d), &mut rng);
    let z: Array3<f64> = random((b, t, d), &mut rng);
    // Mean over (b, t, k) with t + k + 1 < T of log Σ_{b',t'} e^{p·z[b',t']} − p·z[b, t+k+1].
    let loss = |p: &ndarray::Array4<f64>, z: &Array3<f64>| -> f64 {
        let (mut total, mut count) = (0.0, 0);
        for (bi, ti, ki) in itertools_product(b, t, k) {
            if ti + ki + 1 >= t {
                continue;
            }
            let query = p.slice(ndarray::s![bi, ti, ki, ..]);
            let scores: Vec<f64> = z
                .outer_iter()
                .flat_map(|sequence| {
                    sequence
                        .outer_iter()
                        .map(|target| query.dot(&target))
                        .collect::<Vec<_>>()
                })
                .collect();
            total += log_sum_exp(scores.iter().copied()) - scores[bi * t + ti + ki + 1];
            count += 1;
        }
        total / count as f64
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    write_npy(file("p.npy"), &p).unwrap();
    write_npy(file("z.npy"), &z).unwrap();
    let (got, anchors) = loss_command(&[
        "--method".as_ref(),
        "cpc".as_ref(),
        "--features".as_ref(),
        file("p.npy").as_os_str(),
        "--targets".as_ref(),
        file("z.npy").as_os_str(),
        "--grad-out".as_ref(),
        file("gp.npy").as_os_str(),
        "--target-grad-out".as_ref(),
        file("gz.npy").as_os_str(),
    ]);
    let want = loss(&p, &z);
    // Valid (t, k): 3 with k = 0 and 2 with k = 1, per sequence.
    assert_eq!(anchors, (b * 5) as u64);
    assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    let gp: ndarray::Array4<f64> = read_npy(file("gp.npy")).unwrap();
    let gz: Array3<f64> = read_npy(file("gz.npy")).unwrap();
    assert_close("predictions", &gp, &numeric_gradient(&p, |p| loss(p, &z)));
    assert_close("targets", &gz, &numeric_gradient(&z, |z| loss(&p, z)));
}

/// Every (b, t, k) below the bounds, in row-major order.
fn itertools_product(b: usize, t: usize, k: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..b).flat_map(move |x| (0..t).flat_map(move |y| (0..k).map(move |z| (x, y, z))))
}

#[test]
fn missing_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.npy");
    write_npy(&q, &Array2::<f32>::zeros((2, 3))).unwrap();
    let output = run(
        supcon()
            .args(["loss", "--method", "infonce", "--features"])
            .arg(&q),
        false,
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--positives"), "{err}");
    let output = run(
        supcon()
            .args(["loss", "--method", "nce", "--features"])
            .arg(&q)
            .arg("--positives")
            .arg(&q)
            .arg("--negatives")
            .arg(&q),
        false,
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--data-size"), "{err}");
    // A backend the command does not run this loss on is an error, not ignored.
    let output = run(
        supcon()
            .args([
                "loss",
                "--method",
                "swav",
                "--loss-backend",
                "tch",
                "--features",
            ])
            .arg(&q),
        false,
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--loss-backend tch is for supcon"), "{err}");
}
