//! Every CUDA kernel source compiles with NVRTC, on machines without a GPU too (`cargo xtask
//! test` puts CUDA 13's libnvrtc.so.13 on LD_LIBRARY_PATH). Fails when NVRTC cannot be loaded:
//! a broken kernel must not pass CI silently.
#![cfg(feature = "cuda")]

use supcon_loss::cuda::kernels;
use supcon_loss::cuda::nvrtc_compile;
use supcon_loss::cuda::plan::{Precision, TileKernel, STATIC_SHARED_LIMIT};
use supcon_loss::cuda::DEFAULT_ARCH;

fn entries_of(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
        .map(|l| l.trim_end_matches('(').trim().to_string())
        .collect()
}

#[test]
fn every_kernel_compiles_to_ptx_with_its_entry_points() {
    for arch in [DEFAULT_ARCH, "compute_80"] {
        for &(file, source, entries) in kernels::SOURCES {
            let out = nvrtc_compile(source, file, &[format!("--gpu-architecture={arch}")])
                .unwrap_or_else(|e| panic!("{file} for {arch}: {e}"));
            let found = entries_of(&out.ptx);
            for entry in entries {
                assert!(
                    found.iter().any(|f| f == entry),
                    "{file} ({arch}): no `.entry {entry}` in the PTX; found {found:?}"
                );
            }
            assert_eq!(
                found.len(),
                entries.len(),
                "{file}: unexpected entries {found:?}"
            );
        }
    }
}

#[test]
fn tensor_core_kernels_use_mma_and_f32_kernels_do_not() {
    let out = nvrtc_compile(
        kernels::TILES,
        "supcon_tiles.cu",
        &[format!("--gpu-architecture={DEFAULT_ARCH}")],
    )
    .expect("NVRTC");
    // Split the PTX per entry and look for the tensor-core instruction.
    let mut current = String::new();
    let mut mma_in = std::collections::BTreeMap::<String, bool>::new();
    for line in out.ptx.lines() {
        if let Some(name) = line.trim().strip_prefix(".visible .entry ") {
            current = name.trim_end_matches('(').trim().to_string();
            mma_in.insert(current.clone(), false);
        } else if line.contains("mma.sync.aligned.m16n8k8") && !current.is_empty() {
            mma_in.insert(current.clone(), true);
        }
    }
    for (entry, has_mma) in &mma_in {
        assert_eq!(
            *has_mma,
            entry.ends_with("_tf32"),
            "{entry}: mma present = {has_mma}"
        );
    }
    assert_eq!(mma_in.len(), kernels::TILES_ENTRIES.len());
}

/// Assembles for sm_90 (ptxas runs inside NVRTC): catches PTX the assembler rejects, and checks
/// the host's shared-memory arithmetic against ptxas's report, no spills, registers for 2 blocks.
#[test]
fn kernels_assemble_for_hopper_within_budgets() {
    for &(file, source, _) in kernels::SOURCES {
        let out = nvrtc_compile(
            source,
            file,
            &[
                "--gpu-architecture=sm_90".into(),
                "--ptxas-options=-v".into(),
            ],
        )
        .unwrap_or_else(|e| panic!("{file} for sm_90: {e}"));
        let log = out.log;
        let mut entry = String::new();
        let mut checked = 0;
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                entry = rest.split('\'').next().unwrap_or_default().to_string();
            }
            if line.contains("spill") {
                assert!(
                    line.contains("0 bytes spill stores, 0 bytes spill loads"),
                    "{entry}: {line}"
                );
            }
            if let Some(regs) = line.split("Used ").nth(1) {
                let registers: usize = regs.split_whitespace().next().unwrap().parse().unwrap();
                // 256 threads × 2 blocks per SM must fit the 64 K registers.
                assert!(registers <= 128, "{entry}: {registers} registers");
                let smem: usize = line
                    .split(", ")
                    .find(|p| p.ends_with("bytes smem"))
                    .and_then(|p| p.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                assert!(
                    smem <= STATIC_SHARED_LIMIT,
                    "{entry}: {smem} bytes of shared memory"
                );
                for kernel in TileKernel::ALL {
                    for precision in [Precision::F32, Precision::Tf32] {
                        if kernel.entry(precision) == entry {
                            // ptxas drops declared-but-unused arrays; the host may only
                            // over-estimate, by at most the unused score tile (64·65 floats).
                            let host = kernel.shared_bytes(precision);
                            assert!(
                                host >= smem && host - smem <= 64 * 65 * 4 + 1024,
                                "{entry}: host says {host} bytes, ptxas {smem}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        if file == "supcon_tiles.cu" {
            assert_eq!(checked, 6, "ptxas report not parsed:\n{log}");
        }
    }
}

#[test]
fn a_broken_kernel_fails_with_the_compiler_log() {
    let err = nvrtc_compile(
        "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }",
        "broken.cu",
        &[format!("--gpu-architecture={DEFAULT_ARCH}")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("undefined_name"), "{err}");
}
