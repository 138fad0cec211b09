//! Data location: explicit path, then `$SUPCON_DATA` (passed as a value, so no test touches
//! the process environment), then the system folder.

use std::ffi::OsStr;
use std::path::Path;

use supcon_data::location::{candidate_dirs, resolve_dataset_dir_with, DatasetFiles};
use supcon_data::{DataError, FashionMnist, Mnist};

fn touch(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for name in names {
        std::fs::write(dir.join(name), b"").unwrap();
    }
}

const ALL: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

#[test]
fn explicit_location_is_the_only_place_tried() {
    let empty = tempfile::tempdir().unwrap();
    let err = FashionMnist::locate_with_env(Some(empty.path()), Some(OsStr::new("/elsewhere")))
        .unwrap_err();
    let DataError::NotFound { tried, missing, .. } = &err else {
        panic!("unexpected {err}")
    };
    assert_eq!(tried[0], empty.path());
    assert!(
        tried.iter().all(|p| p.starts_with(empty.path())),
        "{tried:?}"
    );
    assert_eq!(missing.len(), 4);
    let text = err.to_string();
    for needle in [
        "apt-get install dataset-fashion-mnist",
        "--data PATH",
        "SUPCON_DATA",
        "train-images-idx3-ubyte",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert!(text.contains(&empty.path().display().to_string()));
}

#[test]
fn env_folder_and_its_dataset_subfolder_are_found() {
    let root = tempfile::tempdir().unwrap();
    touch(&root.path().join("fashion-mnist"), &ALL);
    let dir = FashionMnist::locate_with_env(None, Some(root.path().as_os_str())).unwrap();
    assert_eq!(dir, root.path().join("fashion-mnist"));
    touch(root.path(), &ALL);
    let dir = FashionMnist::locate_with_env(Some(root.path()), None).unwrap();
    assert_eq!(dir, root.path());
}

#[test]
fn a_folder_missing_one_file_does_not_match() {
    let root = tempfile::tempdir().unwrap();
    touch(root.path(), &ALL[..3]);
    let files = Mnist::files();
    let result = resolve_dataset_dir_with(&files, Some(root.path()), None);
    assert!(matches!(
        result,
        Err(DataError::NotFound {
            dataset: "MNIST",
            ..
        })
    ));
}

#[test]
fn env_without_the_dataset_falls_back_to_the_system_folder() {
    let system = tempfile::tempdir().unwrap();
    touch(system.path(), &["data.bin"]);
    let system_dir: &'static str = Box::leak(system.path().display().to_string().into_boxed_str());
    let files = DatasetFiles {
        dataset: "Test data",
        subfolders: &["sub"],
        required: &["data.bin"],
        system_dir: Some(system_dir),
        hint: "make some",
    };
    let env = tempfile::tempdir().unwrap();
    let order = candidate_dirs(&files, None, Some(env.path().as_os_str()));
    assert_eq!(
        order,
        vec![
            env.path().to_path_buf(),
            env.path().join("sub"),
            system.path().to_path_buf()
        ]
    );
    assert_eq!(
        resolve_dataset_dir_with(&files, None, Some(env.path().as_os_str())).unwrap(),
        system.path()
    );
    // An empty variable counts as unset.
    assert_eq!(
        candidate_dirs(&files, None, Some(OsStr::new(""))),
        vec![system.path().to_path_buf()]
    );
    touch(&env.path().join("sub"), &["data.bin.gz"]);
    assert_eq!(
        resolve_dataset_dir_with(&files, None, Some(env.path().as_os_str())).unwrap(),
        env.path().join("sub")
    );
}

#[test]
fn nothing_given_says_so() {
    let files = DatasetFiles {
        dataset: "Test data",
        subfolders: &[],
        required: &["data.bin"],
        system_dir: None,
        hint: "make some",
    };
    let text = resolve_dataset_dir_with(&files, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("no --data PATH given and SUPCON_DATA is not set"),
        "{text}"
    );
}

#[test]
fn dataset_names_parse_in_common_spellings() {
    use supcon_data::DatasetName;
    for name in DatasetName::ALL {
        assert_eq!(name.to_string().parse::<DatasetName>().unwrap(), name);
    }
    assert_eq!(
        "Fashion_MNIST".parse::<DatasetName>().unwrap(),
        DatasetName::FashionMnist
    );
    assert_eq!(
        "CIFAR-10".parse::<DatasetName>().unwrap(),
        DatasetName::Cifar10
    );
    assert_eq!(
        "cifar100_coarse".parse::<DatasetName>().unwrap(),
        DatasetName::Cifar100Coarse
    );
    let err = "imagenet".parse::<DatasetName>().unwrap_err();
    assert!(
        err.to_string().contains("fashion-mnist, mnist, cifar10"),
        "{err}"
    );
    // Loading by name goes through the same resolution: an empty explicit folder is not found.
    let empty = tempfile::tempdir().unwrap();
    let err = DatasetName::Mnist
        .load(supcon_data::Split::Test, Some(empty.path()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::NotFound {
                dataset: "MNIST",
                ..
            }
        ),
        "{err}"
    );
}
