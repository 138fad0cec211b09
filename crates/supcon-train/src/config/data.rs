//! What `[data]` names, interpreted: a data set known by name, an image folder or tar shards,
//! with how their images are decoded. The pipeline opens what this says.

use supcon_data::{ColorMode, DatasetName, Fit, ImageFolderOptions};

use super::DataConfig;
use crate::error::TrainError;

/// Where the images come from: a data set this project knows by name, an image folder, or tar
/// shards.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    Named(DatasetName),
    /// torchvision's `ImageFolder` layout under `data.path`: `train/<class>/*.png|jpg` and
    /// `test/<class>/*`, resized to `data.image_size` and read as `data.color`; `stream`: read
    /// when a batch needs them.
    Folder {
        options: ImageFolderOptions,
        stream: bool,
    },
    /// WebDataset tar shards (`data.path`, `data.test_path`), always streamed.
    Shards(ImageFolderOptions),
}

impl DataSource {
    /// The source `config` names; unknown names are an error listing the valid ones.
    pub fn parse(config: &DataConfig) -> Result<Self, TrainError> {
        let kind = config.dataset.trim().to_ascii_lowercase();
        if kind == "folder" || kind == "shards" {
            let options = image_options(config)?;
            return Ok(if kind == "folder" {
                DataSource::Folder {
                    options,
                    stream: config.stream,
                }
            } else {
                DataSource::Shards(options)
            });
        }
        if config.image_size.is_some() || config.color.is_some() || config.fit.is_some() {
            return Err(TrainError::Config(format!(
                "data.image_size, data.color and data.fit apply to image folders and shards only, not to `{}`",
                config.dataset
            )));
        }
        if config.stream || !config.labels {
            return Err(TrainError::Config(format!(
                "data.stream and data.labels = false apply to image folders and shards only, not to `{}`",
                config.dataset
            )));
        }
        config.dataset.parse().map(DataSource::Named).map_err(|_| {
            let names: Vec<&str> = DatasetName::ALL.iter().map(|n| n.as_str()).collect();
            TrainError::Config(format!(
                "data.dataset `{}` is not one of {}, folder, shards",
                config.dataset,
                names.join(", ")
            ))
        })
    }

    /// Whether the images stay on disk until a batch needs them.
    pub fn is_streamed(&self) -> bool {
        match self {
            DataSource::Named(_) => false,
            DataSource::Folder { stream, .. } => *stream,
            DataSource::Shards(_) => true,
        }
    }
}

/// How images of a folder or shards are decoded.
fn image_options(config: &DataConfig) -> Result<ImageFolderOptions, TrainError> {
    let color = match config.color.as_deref().unwrap_or("rgb") {
        "rgb" => ColorMode::Rgb,
        "gray" => ColorMode::Gray,
        other => {
            return Err(TrainError::Config(format!(
                "data.color `{other}` is not one of rgb, gray"
            )))
        }
    };
    let fit = match config.fit.as_deref().unwrap_or("stretch") {
        "stretch" => Fit::Stretch,
        "center-crop" => Fit::CenterCrop,
        other => {
            return Err(TrainError::Config(format!(
                "data.fit `{other}` is not one of stretch, center-crop"
            )))
        }
    };
    Ok(ImageFolderOptions {
        resize: config.image_size.map(|side| (side, side)),
        fit,
        color,
    })
}
