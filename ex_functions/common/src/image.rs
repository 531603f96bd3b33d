//! The synthetic Earth-observation image model: a deterministic grayscale "satellite
//! image" with a few bright blobs, the preprocessing step (3x3 box blur plus contrast
//! stretch) and bright-region detection (4-connected components).
//!
//! An image is a flat byte slice, one byte per pixel, laid out row-major in a square-ish
//! grid (see [`Dims`]); the last row may be partial when the length is not a product of
//! the width.

/// Smallest region, in pixels, that [`find_regions`] reports (smaller ones are noise).
pub const MIN_REGION_PIXELS: usize = 4;

/// Default detection threshold on the preprocessed (contrast-stretched) image.
pub const DEFAULT_THRESHOLD: u8 = 128;

/// The geometry of an image of `len` pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Pixels per row: the integer square root of `len` (at least 1).
    pub width: usize,
    /// Rows, the last one possibly partial.
    pub height: usize,
    /// Total number of pixels.
    pub len: usize,
}

impl Dims {
    /// The square-ish geometry for `len` pixels.
    pub fn for_len(len: usize) -> Dims {
        let width = isqrt(len).max(1);
        Dims {
            width,
            height: len.div_ceil(width),
            len,
        }
    }

    /// Index of pixel `(x, y)` if it exists.
    #[inline]
    pub fn index(&self, x: usize, y: usize) -> Option<usize> {
        let i = y * self.width + x;
        (x < self.width && i < self.len).then_some(i)
    }
}

/// Integer square root (floor).
fn isqrt(n: usize) -> usize {
    let mut r = (n as f64).sqrt() as usize;
    while r.saturating_mul(r) > n {
        r -= 1;
    }
    while (r + 1).saturating_mul(r + 1) <= n {
        r += 1;
    }
    r
}

/// A xorshift64 pseudo-random generator: small, fast and fully deterministic per seed.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator for `seed` (any value, including 0).
    pub fn new(seed: u64) -> Self {
        // Spread the seed and avoid the all-zero state, which xorshift never leaves.
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        XorShift64(if s == 0 { 0x2545_F491_4F6C_DD1D } else { s })
    }

    /// The next 64 pseudo-random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A pseudo-random number in `0..n` (`n > 0`; slightly biased, fine for test data).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `out` with pseudo-random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// Number of bright blobs [`synthesize`] paints for `seed`: 3 to 6.
pub fn blob_count(seed: u64) -> usize {
    3 + (seed % 4) as usize
}

/// Synthesises a deterministic grayscale image of `len` pixels: dark noise (16..=95) with
/// [`blob_count`]`(seed)` bright discs (230..=255), each in its own cell of a grid over the
/// image so that they do not touch. Images whose grid cells would be under 8x8 pixels get
/// noise only.
pub fn synthesize(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    let mut img = vec![0u8; len];
    rng.fill(&mut img);
    for px in img.iter_mut() {
        *px = 16 + *px % 80;
    }
    let dims = Dims::for_len(len);
    let blobs = blob_count(seed);
    // A g x g grid of cells; the blobs go into distinct, randomly chosen cells.
    let grid = isqrt(blobs - 1) + 1;
    let cell_w = dims.width / grid;
    let cell_h = (dims.len / dims.width) / grid; // full rows only
    if cell_w < 8 || cell_h < 8 {
        return img; // too small for blobs: noise only
    }
    let mut cells: Vec<usize> = (0..grid * grid).collect();
    for i in (1..cells.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        cells.swap(i, j);
    }
    let radius = (cell_w.min(cell_h) / 4).max(1);
    for &cell in cells.iter().take(blobs) {
        let (cx0, cy0) = ((cell % grid) * cell_w, (cell / grid) * cell_h);
        // Centre with some jitter, keeping the disc one pixel clear of its cell's border so
        // that blobs in neighbouring cells never touch, not even after blurring.
        let span_x = cell_w.saturating_sub(2 * radius + 2).max(1) as u64;
        let span_y = cell_h.saturating_sub(2 * radius + 2).max(1) as u64;
        let cx = cx0 + radius + 1 + rng.below(span_x) as usize;
        let cy = cy0 + radius + 1 + rng.below(span_y) as usize;
        let r2 = (radius * radius) as isize;
        for y in cy.saturating_sub(radius)..=cy + radius {
            for x in cx.saturating_sub(radius)..=cx + radius {
                let (dx, dy) = (x as isize - cx as isize, y as isize - cy as isize);
                if dx * dx + dy * dy <= r2 {
                    if let Some(i) = dims.index(x, y) {
                        img[i] = 230 + (rng.next_u64() % 26) as u8;
                    }
                }
            }
        }
    }
    img
}

/// 3x3 box blur: each pixel becomes the mean of itself and its existing neighbours.
pub fn box_blur_3x3(img: &[u8]) -> Vec<u8> {
    let dims = Dims::for_len(img.len());
    let mut out = vec![0u8; img.len()];
    for y in 0..dims.height {
        for x in 0..dims.width {
            let Some(i) = dims.index(x, y) else { break };
            let mut sum = 0u32;
            let mut n = 0u32;
            for ny in y.saturating_sub(1)..=y + 1 {
                for nx in x.saturating_sub(1)..=x + 1 {
                    if let Some(j) = dims.index(nx, ny) {
                        sum += u32::from(img[j]);
                        n += 1;
                    }
                }
            }
            out[i] = ((sum + n / 2) / n) as u8;
        }
    }
    out
}

/// Linear contrast stretch of `img` in place, mapping its minimum to 0 and maximum to 255
/// (an image of one grey level becomes all 0).
pub fn stretch_contrast(img: &mut [u8]) {
    let (Some(&lo), Some(&hi)) = (img.iter().min(), img.iter().max()) else {
        return;
    };
    if hi == lo {
        img.fill(0);
        return;
    }
    let range = u32::from(hi - lo);
    for px in img.iter_mut() {
        *px = ((u32::from(*px - lo) * 255 + range / 2) / range) as u8;
    }
}

/// The preprocessing step: 3x3 box blur (denoise) followed by a contrast stretch.
pub fn preprocess(img: &[u8]) -> Vec<u8> {
    let mut out = box_blur_3x3(img);
    stretch_contrast(&mut out);
    out
}

/// Bounding boxes `(x_min, y_min, x_max, y_max)` of the 4-connected regions of pixels
/// `>= threshold` that have at least `min_pixels` pixels, in row-major order of their
/// first pixel.
pub fn find_regions(img: &[u8], threshold: u8, min_pixels: usize) -> Vec<(u32, u32, u32, u32)> {
    let dims = Dims::for_len(img.len());
    let mut seen = vec![false; img.len()];
    let mut stack = Vec::new();
    let mut boxes = Vec::new();
    for start in 0..img.len() {
        if seen[start] || img[start] < threshold {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let mut pixels = 0usize;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % dims.width, i / dims.width);
            pixels += 1;
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            let neighbours = [
                x.checked_sub(1).and_then(|nx| dims.index(nx, y)),
                dims.index(x + 1, y),
                y.checked_sub(1).and_then(|ny| dims.index(x, ny)),
                dims.index(x, y + 1),
            ];
            for j in neighbours.into_iter().flatten() {
                if !seen[j] && img[j] >= threshold {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if pixels >= min_pixels {
            boxes.push((x0 as u32, y0 as u32, x1 as u32, y1 as u32));
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_square_ish() {
        assert_eq!(
            Dims::for_len(1 << 20),
            Dims {
                width: 1024,
                height: 1024,
                len: 1 << 20
            }
        );
        let d = Dims::for_len(10);
        assert_eq!((d.width, d.height), (3, 4));
        assert_eq!(d.index(0, 3), Some(9));
        assert_eq!(d.index(1, 3), None); // partial last row
        assert_eq!(d.index(3, 0), None);
        assert_eq!(Dims::for_len(0).width, 1);
        assert_eq!(Dims::for_len(1).height, 1);
        for n in [0usize, 1, 2, 3, 4, 15, 16, 17, 99, 100, 101, 1 << 40] {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
    }

    #[test]
    fn prng_is_deterministic() {
        let (mut a, mut b) = (XorShift64::new(7), XorShift64::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(XorShift64::new(0).next_u64(), 0);
        let mut buf = [0u8; 13];
        XorShift64::new(3).fill(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
        assert_eq!(synthesize(4096, 9), synthesize(4096, 9));
        assert_ne!(synthesize(4096, 9), synthesize(4096, 10));
    }

    #[test]
    fn blur_and_stretch() {
        // A single bright pixel in the middle of a 3x3 image spreads evenly.
        let mut img = vec![0u8; 9];
        img[4] = 90;
        let b = box_blur_3x3(&img);
        assert_eq!(b[4], 10);
        assert_eq!(b[0], 23); // corner: mean of 4 pixels, 90 / 4 rounded
        let mut s = vec![10u8, 20, 30];
        stretch_contrast(&mut s);
        assert_eq!(s, [0, 128, 255]);
        let mut flat = vec![5u8; 4];
        stretch_contrast(&mut flat);
        assert_eq!(flat, [0; 4]);
        stretch_contrast(&mut []);
        // Odd lengths (partial last row) work.
        assert_eq!(preprocess(&synthesize(1001, 1)).len(), 1001);
    }

    #[test]
    fn regions_are_4_connected() {
        #[rustfmt::skip]
        let img = [
            9, 9, 0, 0,
            9, 0, 0, 9,
            0, 0, 9, 9,
            0, 9, 0, 9,
        ];
        // Diagonal contact does not connect; the lone pixel at (1,3) is below min size 2.
        assert_eq!(find_regions(&img, 5, 2), [(0, 0, 1, 1), (2, 1, 3, 3)]);
        assert_eq!(find_regions(&img, 5, 1).len(), 3);
        assert!(find_regions(&img, 10, 1).is_empty());
        assert!(find_regions(&[], 1, 1).is_empty());
    }

    #[test]
    fn detect_finds_every_synthetic_blob() {
        for seed in 0..8u64 {
            let big = if seed < 2 { 1 << 20 } else { 64 * 64 };
            for len in [64 * 64, 100_000, big] {
                let processed = preprocess(&synthesize(len, seed));
                let regions = find_regions(&processed, DEFAULT_THRESHOLD, MIN_REGION_PIXELS);
                assert_eq!(regions.len(), blob_count(seed), "seed {seed} len {len}");
            }
        }
        // Too small for blobs: noise only.
        assert!(synthesize(8 * 8, 1).iter().all(|px| (16..96).contains(px)));
    }
}
