//! The embedding matrix type: one row per image, row-major `f32`, with the image ids.
//!
//! `Embeddings { ids, data, dim }`: row `i` is `data[i * dim..(i + 1) * dim]` and belongs to
//! `ids[i]`. Values are checked finite on construction, so scores are never NaN downstream.
//! Converts to and from a CPU `candle_core::Tensor` of shape `(n, dim)`.

use candle_core::{DType, Device, Tensor};

use super::VerifyError;

/// Norms below this are treated as this value when normalising (as `torch.nn.functional.normalize`
/// does with `eps = 1e-12`): a zero row stays zero instead of becoming NaN.
pub const NORM_EPS: f32 = 1e-12;

/// A row-major `(n, dim)` matrix of `f32` embeddings with one id per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    ids: Vec<String>,
    data: Vec<f32>,
    dim: usize,
}

impl Embeddings {
    /// Checks that `data` holds `ids.len()` rows of `dim` finite values.
    pub fn new(ids: Vec<String>, data: Vec<f32>, dim: usize) -> Result<Self, VerifyError> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(VerifyError::BadShape {
                len: data.len(),
                dim,
            });
        }
        let rows = data.len() / dim;
        if rows != ids.len() {
            return Err(VerifyError::LengthMismatch {
                what: "embeddings (ids vs rows)",
                left: ids.len(),
                right: rows,
            });
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(VerifyError::NonFinite {
                what: "embeddings",
                row: pos / dim,
            });
        }
        Ok(Embeddings { ids, data, dim })
    }

    /// Builds from one `Vec` per row (convenient for small, hand-made inputs).
    pub fn from_rows(ids: Vec<String>, rows: &[Vec<f32>]) -> Result<Self, VerifyError> {
        let dim = rows.first().map(|r| r.len()).unwrap_or(0);
        if let Some(bad) = rows.iter().find(|r| r.len() != dim) {
            return Err(VerifyError::DimMismatch {
                left: bad.len(),
                right: dim,
            });
        }
        Self::new(ids, rows.concat(), dim)
    }

    /// From a 2-D tensor `(n, dim)` on any device (copied to the CPU, converted to f32).
    pub fn from_tensor(ids: Vec<String>, t: &Tensor) -> Result<Self, VerifyError> {
        let (n, dim) = t.dims2()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        debug_assert_eq!(data.len(), n * dim);
        Self::new(ids, data, dim)
    }

    /// A CPU tensor of shape `(n, dim)` holding a copy of the data.
    pub fn to_tensor(&self) -> Result<Tensor, VerifyError> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.len(), self.dim),
            &Device::Cpu,
        )?)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The whole row-major matrix.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row `i` (panics if `i >= len()`, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Divides every row by its L2 norm (rows with norm below [`NORM_EPS`] by `NORM_EPS`).
    pub fn l2_normalize(&mut self) {
        l2_normalize_rows(&mut self.data, self.dim);
    }

    /// A copy with every row L2-normalised.
    pub fn l2_normalized(&self) -> Embeddings {
        let mut e = self.clone();
        e.l2_normalize();
        e
    }

    /// The element-wise mean with `other` (same ids, same shape): test-time augmentation
    /// averages an image's embedding with its horizontally flipped image's.
    pub fn mean_with(&self, other: &Embeddings) -> Result<Embeddings, VerifyError> {
        if self.dim != other.dim {
            return Err(VerifyError::DimMismatch {
                left: self.dim,
                right: other.dim,
            });
        }
        if self.ids != other.ids {
            return Err(VerifyError::LengthMismatch {
                what: "embeddings to average (ids differ)",
                left: self.len(),
                right: other.len(),
            });
        }
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| 0.5 * (a + b))
            .collect();
        Ok(Embeddings {
            ids: self.ids.clone(),
            data,
            dim: self.dim,
        })
    }

    /// Splits into `(ids, data, dim)`.
    pub fn into_parts(self) -> (Vec<String>, Vec<f32>, usize) {
        (self.ids, self.data, self.dim)
    }
}

/// L2-normalises each `dim`-wide row of a row-major buffer in place.
pub fn l2_normalize_rows(data: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in data.chunks_exact_mut(dim) {
        let norm = dot(row, row).sqrt().max(NORM_EPS);
        for v in row.iter_mut() {
            *v /= norm;
        }
    }
}

/// Dot product accumulated in f64 (used for per-row norms and exact re-scoring).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum::<f64>() as f32
}

/// Squared Euclidean distance accumulated in f64.
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = *x as f64 - *y as f64;
            d * d
        })
        .sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("img{i}")).collect()
    }

    #[test]
    fn shape_checks() {
        assert!(Embeddings::new(ids(2), vec![1.0; 6], 3).is_ok());
        assert!(matches!(
            Embeddings::new(ids(2), vec![1.0; 5], 3),
            Err(VerifyError::BadShape { .. })
        ));
        assert!(matches!(
            Embeddings::new(ids(3), vec![1.0; 6], 3),
            Err(VerifyError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Embeddings::new(ids(1), vec![1.0; 3], 0),
            Err(VerifyError::BadShape { .. })
        ));
        assert!(matches!(
            Embeddings::new(ids(2), vec![1.0, 2.0, 3.0, f32::NAN, 0.0, 0.0], 3),
            Err(VerifyError::NonFinite { row: 1, .. })
        ));
        assert!(matches!(
            Embeddings::from_rows(ids(2), &[vec![1.0, 2.0], vec![1.0]]),
            Err(VerifyError::DimMismatch { .. })
        ));
    }

    #[test]
    fn normalisation() {
        let mut e = Embeddings::from_rows(ids(2), &[vec![3.0, 4.0], vec![0.0, 0.0]]).unwrap();
        e.l2_normalize();
        assert_eq!(e.row(0), &[0.6, 0.8]);
        assert_eq!(e.row(1), &[0.0, 0.0]);
    }

    #[test]
    fn mean_with_averages_rows() {
        let a = Embeddings::from_rows(ids(2), &[vec![1.0, 2.0], vec![3.0, 4.0]]).unwrap();
        let b = Embeddings::from_rows(ids(2), &[vec![3.0, 0.0], vec![1.0, 0.0]]).unwrap();
        let m = a.mean_with(&b).unwrap();
        assert_eq!(m.data(), &[2.0, 1.0, 2.0, 2.0]);
        let c = Embeddings::from_rows(ids(1), &[vec![1.0, 2.0]]).unwrap();
        assert!(a.mean_with(&c).is_err());
    }

    #[test]
    fn tensor_round_trip() {
        let e = Embeddings::from_rows(ids(2), &[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]).unwrap();
        let t = e.to_tensor().unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        let back = Embeddings::from_tensor(ids(2), &t).unwrap();
        assert_eq!(back, e);
    }
}
