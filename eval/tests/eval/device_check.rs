//! The GPU acceptance checks' code, run CPU against CPU (on a GPU machine `cargo xtask
//! gpu-check` runs it CPU against CUDA).

use eval::device_check::{BF16_TOLERANCE, F32_TOLERANCE, agreement, pas_subject_seconds, throughput};
use llm_burn::Dtype;

use crate::{TestBackend, tiny_model};

#[test]
fn the_checks_agree_on_one_backend_and_measure_throughput() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let device = Default::default();
    for (dtype, tolerance) in [(Dtype::F32, F32_TOLERANCE), (Dtype::Bf16, BF16_TOLERANCE)] {
        let checks = agreement::<TestBackend, TestBackend>(dir.path(), &device, &device, dtype, tolerance).unwrap();
        assert_eq!(checks.len(), 4);
        for c in &checks {
            assert!(c.ok && c.max_abs_diff == 0.0 && c.max_abs > 0.0, "{dtype}: {c:?}");
        }
    }
    let t = throughput::<TestBackend>(dir.path(), &device, Dtype::Bf16, &[16, 64], 48, 8, 4).unwrap();
    assert_eq!(t.prefill_tokens_per_second.iter().map(|p| p.0).collect::<Vec<_>>(), vec![16, 64]);
    assert!(t.prefill_tokens_per_second.iter().all(|p| p.1 > 0.0) && t.scoring_prefix_tokens >= 48 && t.scoring_seconds > 0.0);
    assert!(t.projected_pas_seconds_per_subject > 0.0);
    // The projection: 13 prefixes and 360 items.
    assert_eq!(pas_subject_seconds(1.0, 0.01), 13.0 + 3.6);
}
