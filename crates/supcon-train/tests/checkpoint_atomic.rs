//! Checkpoints are replaced atomically: a write that dies half-way leaves the previous
//! checkpoint intact and loadable, and no stray temporary file.

use supcon_models::{Architecture, ModelConfig, SupConModel};
use supcon_train::checkpoint::{self, varstore_tensors, Checkpoint, TrainState, FORMAT_VERSION};
use supcon_train::metrics_log::Stage;
use supcon_train::run_dir::write_atomic_with;
use tch::nn::VarStore;
use tch::Device;

fn state(step: u64) -> TrainState {
    TrainState {
        format_version: FORMAT_VERSION,
        stage: Stage::Pretrain,
        method: "supcon".into(),
        model: ModelConfig::new(Architecture::ResNetTiny).with_in_channels(1),
        num_classes: 10,
        epoch: 0,
        step_in_epoch: step,
        global_step: step,
        epochs: 1,
        seed: 0,
        wall_seconds: 0.0,
        images_seen: 0,
        epoch_loss_sum: 0.0,
        epoch_steps: step,
        epoch_correct: 0,
        epoch_seen: 0,
        best_val_top1: None,
        best_epoch: None,
        world_size: 1,
    }
}

#[test]
fn a_write_that_dies_half_way_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pretrain-last.safetensors");
    let vs = VarStore::new(Device::Cpu);
    SupConModel::new(&vs.root(), &state(0).model).unwrap();
    checkpoint::save(&path, &state(7), &[("model", varstore_tensors(&vs))]).unwrap();
    let good = std::fs::read(&path).unwrap();

    // A second save that writes half of a checkpoint and then fails (a full disk, a crash).
    let result = write_atomic_with(&path, |tmp| {
        std::fs::write(tmp, &good[..good.len() / 2])?;
        Err::<(), _>(std::io::Error::other("simulated crash"))
    });
    assert!(result.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded.require_state().unwrap().global_step, 7);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["pretrain-last.safetensors".to_string()]);

    // A torn file where the checkpoint should be is reported, not half-loaded.
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let err = supcon_train::error::chain(&Checkpoint::load(&path).err().unwrap());
    assert!(err.contains("pretrain-last.safetensors"), "{err}");

    // A successful save replaces the file as a whole.
    checkpoint::save(&path, &state(9), &[("model", varstore_tensors(&vs))]).unwrap();
    assert_eq!(
        Checkpoint::load(&path)
            .unwrap()
            .require_state()
            .unwrap()
            .global_step,
        9
    );
}
