//! Batch writers: N views per image, or multi-crop groups, straight into contiguous f32
//! buffers, in parallel over images (rayon), with per-thread scratch buffers.
//!
//! # Layout
//!
//! [`Augmenter::augment_batch`] writes `[batch, views, C, H, W]` — batch-major: image `b`,
//! view `v` is row `b·views + v` of a `[batch·views, C, H, W]` tensor. A model that maps each
//! row to an embedding therefore produces `[batch·views, dim]` = `[batch, views, dim]`, the
//! layout of `supcon-loss`'s features, without a copy. (SupContrast's `torch.cat` of the two
//! crops is view-major instead; the loss builds its own contrast order from `[batch, views,
//! dim]`, so nothing else needs to change.)
//!
//! # Determinism
//!
//! View `v` of the image with id `i` in epoch `e` is drawn from [`ViewRng::for_view`]`(seed,
//! e, i, v)` alone, so the output is bit-identical for any thread count, batch composition or
//! order.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::error::AugmentError;
use crate::image::ImageRef;
use crate::ops::Scratch;
use crate::pipeline::Pipeline;
use crate::rng::ViewRng;

thread_local! {
    // One scratch per worker thread, grown to the largest view it has seen and then reused:
    // the hot loop does not allocate.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        // Only reachable if a pipeline re-entered the batch writer on this thread.
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Checks images against a pipeline: channels, byte sizes, and one common view size.
/// Returns `(view height, view width)`.
fn common_view_size(
    pipeline: &Pipeline,
    images: &[ImageRef<'_>],
) -> Result<(usize, usize), AugmentError> {
    let mut expected: Option<(usize, usize)> = None;
    for (index, image) in images.iter().enumerate() {
        pipeline.check_image(image, index)?;
        let size = pipeline.output_size(image.height, image.width);
        match expected {
            None => expected = Some(size),
            Some(e) if e != size => {
                return Err(AugmentError::ViewSize {
                    index,
                    height: image.height,
                    width: image.width,
                    out_height: size.0,
                    out_width: size.1,
                    expected_height: e.0,
                    expected_width: e.1,
                })
            }
            Some(_) => {}
        }
    }
    Ok(expected.unwrap_or_else(|| pipeline.output_size(0, 0)))
}

/// A pipeline with a seed: the multi-view batch writer.
#[derive(Clone, Debug)]
pub struct Augmenter {
    pipeline: Pipeline,
    /// View 0's own pipeline, when it has one (asymmetric views).
    first_view: Option<Pipeline>,
    seed: u64,
}

impl Augmenter {
    /// An augmenter running `pipeline`, with `seed` as the root of every view's random stream.
    pub fn new(pipeline: Pipeline, seed: u64) -> Self {
        Self {
            pipeline,
            first_view: None,
            seed,
        }
    }

    /// The same augmenter with view 0 made by `first_view` instead: asymmetric views, as
    /// InvSpread's image and augmented copy or SimCLR's augmentation study (the studied
    /// transformation on one branch, the identity on the other). Both pipelines must take the
    /// same channels; their views must have one size (checked per batch).
    pub fn with_first_view(self, first_view: Pipeline) -> Result<Self, AugmentError> {
        if first_view.channels() != self.pipeline.channels() {
            return Err(AugmentError::InvalidParameter {
                op: "Augmenter",
                name: "first_view",
                reason: format!(
                    "its pipeline takes {} channel(s), the other views' {}",
                    first_view.channels(),
                    self.pipeline.channels()
                ),
            });
        }
        Ok(Self {
            first_view: Some(first_view),
            ..self
        })
    }

    /// The pipeline of every view (every view but the first when [`Augmenter::first_view`]
    /// is set).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// View 0's own pipeline, if set ([`Augmenter::with_first_view`]).
    pub fn first_view(&self) -> Option<&Pipeline> {
        self.first_view.as_ref()
    }

    /// The pipeline that makes view `view`.
    fn pipeline_of(&self, view: u64) -> &Pipeline {
        match &self.first_view {
            Some(first) if view == 0 => first,
            _ => &self.pipeline,
        }
    }

    /// The view size of `images` under every pipeline in use: one size, or an error.
    fn view_size(&self, images: &[ImageRef<'_>]) -> Result<(usize, usize), AugmentError> {
        let size = common_view_size(&self.pipeline, images)?;
        if let Some(first) = &self.first_view {
            let first_size = common_view_size(first, images)?;
            if first_size != size {
                return Err(AugmentError::InvalidParameter {
                    op: "Augmenter",
                    name: "first_view",
                    reason: format!(
                        "its views are {}×{}, the other views {}×{}: every view of a batch must \
                         have one size",
                        first_size.0, first_size.1, size.0, size.1
                    ),
                });
            }
        }
        Ok(size)
    }

    /// The root seed of the views' random streams.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `[C, H, W]` of the views of `images` (checked: same channels, one view size).
    pub fn view_shape(&self, images: &[ImageRef<'_>]) -> Result<[usize; 3], AugmentError> {
        let (h, w) = self.view_size(images)?;
        Ok([self.pipeline.channels(), h, w])
    }

    /// Floats `augment_batch` writes for `images` and `views`.
    pub fn output_len(&self, images: &[ImageRef<'_>], views: usize) -> Result<usize, AugmentError> {
        let [c, h, w] = self.view_shape(images)?;
        Ok(images.len() * views * c * h * w)
    }

    /// One view, with the same stream as the batch writer uses.
    pub fn augment_view(
        &self,
        image: ImageRef<'_>,
        id: u64,
        epoch: u64,
        view: u64,
        out: &mut [f32],
    ) -> Result<(), AugmentError> {
        let mut rng = ViewRng::for_view(self.seed, epoch, id, view);
        self.pipeline_of(view).apply(image, &mut rng, out)
    }

    /// Writes `views` views of every image into `out`, laid out `[batch, views, C, H, W]`.
    /// `ids[b]` is image `b`'s identity in the data set (its index), which with `epoch` and the
    /// view number selects the random stream. Runs on the current rayon pool.
    pub fn augment_batch(
        &self,
        images: &[ImageRef<'_>],
        ids: &[u64],
        epoch: u64,
        views: usize,
        out: &mut [f32],
    ) -> Result<(), AugmentError> {
        if views == 0 {
            return Err(AugmentError::ZeroViews);
        }
        if ids.len() != images.len() {
            return Err(AugmentError::IdCount {
                images: images.len(),
                ids: ids.len(),
            });
        }
        let (h, w) = self.view_size(images)?;
        let per_view = self.pipeline.channels() * h * w;
        let expected = images.len() * views * per_view;
        if out.len() != expected {
            return Err(AugmentError::OutputSize {
                buffer: 0,
                len: out.len(),
                expected,
                batch: images.len(),
                views,
                per_view,
            });
        }
        if per_view == 0 {
            return Ok(());
        }
        out.par_chunks_mut(views * per_view)
            .zip(images.par_iter().zip(ids.par_iter()))
            .for_each(|(chunk, (image, &id))| {
                with_scratch(|scratch| {
                    for (v, view_out) in chunk.chunks_exact_mut(per_view).enumerate() {
                        let mut rng = ViewRng::for_view(self.seed, epoch, id, v as u64);
                        self.pipeline_of(v as u64)
                            .run(image, &mut rng, scratch, view_out);
                    }
                });
            });
        Ok(())
    }
}

/// `views` crops made by one pipeline (e.g. SwAV's 2 global crops of 224 or 6 local of 96).
#[derive(Clone, Debug, PartialEq)]
pub struct CropGroup {
    /// The pipeline making this group's crops; its views must all have one size.
    pub pipeline: Pipeline,
    /// Crops per image in this group (at least 1).
    pub views: usize,
}

/// Multi-crop (SwAV): several crop groups per image, each into its own buffer
/// `[batch, group views, C, H_g, W_g]`. Views are numbered across groups (the global crops
/// are views 0 and 1, the first local crop view 2, …), which selects their random streams.
#[derive(Clone, Debug)]
pub struct MultiCropAugmenter {
    groups: Vec<CropGroup>,
    seed: u64,
}

impl MultiCropAugmenter {
    /// A multi-crop augmenter over `groups`, in output-buffer order, with `seed` as the root of
    /// every view's random stream; fails when a group has zero views.
    pub fn new(groups: Vec<CropGroup>, seed: u64) -> Result<Self, AugmentError> {
        if groups.iter().any(|g| g.views == 0) {
            return Err(AugmentError::ZeroViews);
        }
        Ok(Self { groups, seed })
    }

    /// The crop groups, in output-buffer order.
    pub fn groups(&self) -> &[CropGroup] {
        &self.groups
    }

    /// `[C, H, W]` of each group's views.
    pub fn view_shapes(&self, images: &[ImageRef<'_>]) -> Result<Vec<[usize; 3]>, AugmentError> {
        self.groups
            .iter()
            .map(|g| {
                let (h, w) = common_view_size(&g.pipeline, images)?;
                Ok([g.pipeline.channels(), h, w])
            })
            .collect()
    }

    /// Writes every group's views; `outs[g]` must hold `batch · views_g · C · H_g · W_g` floats.
    pub fn augment_batch(
        &self,
        images: &[ImageRef<'_>],
        ids: &[u64],
        epoch: u64,
        outs: &mut [&mut [f32]],
    ) -> Result<(), AugmentError> {
        if outs.len() != self.groups.len() {
            return Err(AugmentError::BufferCount {
                groups: self.groups.len(),
                buffers: outs.len(),
            });
        }
        if ids.len() != images.len() {
            return Err(AugmentError::IdCount {
                images: images.len(),
                ids: ids.len(),
            });
        }
        let shapes = self.view_shapes(images)?;
        let mut per_image: Vec<Vec<&mut [f32]>> = (0..images.len())
            .map(|_| Vec::with_capacity(outs.len()))
            .collect();
        for (g, (out, group)) in outs.iter_mut().zip(&self.groups).enumerate() {
            let per_view = shapes[g].iter().product::<usize>();
            let expected = images.len() * group.views * per_view;
            if out.len() != expected {
                return Err(AugmentError::OutputSize {
                    buffer: g,
                    len: out.len(),
                    expected,
                    batch: images.len(),
                    views: group.views,
                    per_view,
                });
            }
            if expected == 0 {
                return Ok(());
            }
            for (b, chunk) in out.chunks_exact_mut(group.views * per_view).enumerate() {
                per_image[b].push(chunk);
            }
        }
        let offsets: Vec<u64> = self
            .groups
            .iter()
            .scan(0u64, |acc, g| {
                let start = *acc;
                *acc += g.views as u64;
                Some(start)
            })
            .collect();
        per_image
            .par_iter_mut()
            .zip(images.par_iter().zip(ids.par_iter()))
            .for_each(|(chunks, (image, &id))| {
                with_scratch(|scratch| {
                    for (g, chunk) in chunks.iter_mut().enumerate() {
                        let group = &self.groups[g];
                        let per_view = chunk.len() / group.views;
                        for (v, view_out) in chunk.chunks_exact_mut(per_view).enumerate() {
                            let view = offsets[g] + v as u64;
                            let mut rng = ViewRng::for_view(self.seed, epoch, id, view);
                            group.pipeline.run(image, &mut rng, scratch, view_out);
                        }
                    }
                });
            });
        Ok(())
    }
}
