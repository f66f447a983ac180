# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Exact, faster image steps for PrepareImageInputs (FlashOCC porting kit).

PrepareImageInputs resizes each 1600x900 camera image to about 750x420 with
PIL's bicubic filter and then keeps a 704x256 crop of it: most of the resize
work is thrown away. `resize_crop` computes only the pixels the crop keeps,
with Pillow's own fixed-point arithmetic (the coefficients of Pillow's
Resample.c, replicated in double precision, rounded to 22-bit integers the same
way, summed in int32 and clipped the same way), so its output equals
`img.resize(size).crop(box)` bit for bit. `normalize_stack` replaces mmcv's
imnormalize + torch copies + torch.stack by a 3x256 lookup table built *by*
imnormalize (so the float32 values are imnormalize's own), written straight
into the stacked tensor. `flip_rotate` does PIL's flip and nearest-neighbour
rotate in one pass, stepping through Pillow's own 16.16 fixed-point matrix.

Each checks itself against PIL/mmcv once per process (normalisation: per image
shape) and falls back to it, with a warning, if a platform computes differently.
numba is a dependency of mmdet3d; without it everything falls back too.
"""
import functools
import math
import warnings

import numpy as np
from PIL import Image

try:
    import numba
except ImportError:  # pragma: no cover - mmdet3d requires numba
    numba = None

PRECISION_BITS = 32 - 8 - 2  # Pillow's 8-bit resampling precision
TRANSPOSE = getattr(Image, 'Transpose', Image).TRANSPOSE  # Pillow < 9.1 has no enum
HALF = 1 << (PRECISION_BITS - 1)
BICUBIC_SUPPORT = 2.0


def _bicubic(x):
    """Pillow's bicubic_filter (a = -0.5), same operations in the same order."""
    x = np.abs(x)
    out = np.zeros_like(x)
    near = x < 1.0
    far = ~near & (x < 2.0)
    xn, xf = x[near], x[far]
    out[near] = ((-0.5 + 2.0) * xn - (-0.5 + 3.0)) * xn * xn + 1
    out[far] = (((xf - 5) * xf + 8) * xf - 4) * -0.5
    return out


def resample_coeffs(in_size, out_size, first, count):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for the whole-image box
    (in0 = 0, in1 = in_size), restricted to outputs first .. first + count - 1.

    Returns (xmin, n, k): first input index, number of taps and int32 taps of
    each output.
    """
    xmin, n, k = _all_coeffs(in_size, out_size)
    return xmin[first:first + count], n[first:first + count], k[first:first + count]


@functools.lru_cache(maxsize=2048)
def _all_coeffs(in_size, out_size):
    """Every output's taps; cached: training draws a few hundred sizes per axis."""
    first, count = 0, out_size
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = 0.0 + (np.arange(first, first + count, dtype=np.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    n = xmax - xmin
    taps = np.arange(ksize)
    valid = taps[None, :] < n[:, None]
    w = _bicubic(((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5) * ss)
    w[~valid] = 0.0
    ww = np.zeros(count)
    for t in range(ksize):  # the C loop's summation order
        ww = ww + w[:, t]
    nonzero = ww != 0.0
    w[nonzero] = w[nonzero] / ww[nonzero, None]
    w[~valid] = 0.0
    scaled = w * (1 << PRECISION_BITS)
    k = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int32)
    out = xmin.astype(np.int32), n.astype(np.int32), k
    for a in out:  # shared through the cache
        a.setflags(write=False)
    return out


if numba is not None:
    @numba.njit(cache=True, nogil=True)
    def _hpass(src_t, xmin, n, k, tmp):
        """Horizontal pass on the transposed source: src_t[x] holds column x
        (rows x channels, contiguous), so each tap is one vectorised
        multiply-add over all rows; output tmp is (rows, columns, 3)."""
        nx = xmin.shape[0]
        m_len = src_t.shape[1]
        rows = m_len // 3
        block = 16
        acc = np.empty((block, m_len), np.int32)
        res = np.empty((block, m_len), np.uint8)
        for jb in range(0, nx, block):
            nb = min(block, nx - jb)
            for b in range(nb):
                j = jb + b
                a = acc[b]
                for m in range(m_len):
                    a[m] = HALF
                for t in range(n[j]):
                    kt = k[j, t]
                    col = src_t[xmin[j] + t]
                    for m in range(m_len):
                        a[m] += np.int32(col[m]) * kt
                out = res[b]
                for m in range(m_len):
                    v = a[m] >> PRECISION_BITS
                    out[m] = 0 if v < 0 else (255 if v > 255 else v)
            # block transpose into (rows, columns, 3)
            for r in range(rows):
                for b in range(nb):
                    tmp[r, jb + b, 0] = res[b, r * 3]
                    tmp[r, jb + b, 1] = res[b, r * 3 + 1]
                    tmp[r, jb + b, 2] = res[b, r * 3 + 2]

    @numba.njit(cache=True, nogil=True)
    def _vpass(tmp, ymin, n, k, out):
        """Vertical pass: tmp (rows, columns * 3) -> out (outputs, columns * 3)."""
        ny = ymin.shape[0]
        m_len = tmp.shape[1]
        acc = np.empty(m_len, np.int32)
        for y in range(ny):
            for m in range(m_len):
                acc[m] = HALF
            for t in range(n[y]):
                kt = k[y, t]
                row = tmp[ymin[y] + t]
                for m in range(m_len):
                    acc[m] += np.int32(row[m]) * kt
            for m in range(m_len):
                v = acc[m] >> PRECISION_BITS
                out[y, m] = 0 if v < 0 else (255 if v > 255 else v)

    @numba.njit(cache=True, nogil=True)
    def _lut_chw(img, lut, out):
        """out[c, y, x] = lut[c, img[y, x, 2 - c]]: imnormalize(to_rgb=True) swaps channels first."""
        h, w = img.shape[0], img.shape[1]
        for c in range(3):
            src = 2 - c
            table = lut[c]
            for y in range(h):
                for x in range(w):
                    out[c, y, x] = table[img[y, x, src]]


    @numba.njit(cache=True, nogil=True)
    def _flip_rotate(src, flip, fixed, out):
        """out = PIL's img.transpose(FLIP_LEFT_RIGHT) (if flip) then
        img.rotate(angle) (nearest, 16.16 fixed point, black fill), with the
        fixed-point matrix of Pillow's affine_fixed."""
        h, w = src.shape[0], src.shape[1]
        a0, a1, a2, a3, a4, a5 = fixed[0], fixed[1], fixed[2], fixed[3], fixed[4], fixed[5]
        for y in range(h):
            xx = a2 + y * a1
            yy = a5 + y * a4
            for x in range(w):
                xin = xx >> 16
                yin = yy >> 16
                if xin >= 0 and xin < w and yin >= 0 and yin < h:
                    sx = w - 1 - xin if flip else xin
                    out[y, x, 0] = src[yin, sx, 0]
                    out[y, x, 1] = src[yin, sx, 1]
                    out[y, x, 2] = src[yin, sx, 2]
                else:
                    out[y, x, 0] = 0
                    out[y, x, 1] = 0
                    out[y, x, 2] = 0
                xx += a0
                yy += a3

def _resize_crop(img, size, crop):
    width, height = img.size
    new_w, new_h = size
    cx0, cy0, cx1, cy1 = crop
    out = np.zeros((cy1 - cy0, cx1 - cx0, 3), np.uint8)
    # the part of the crop inside the resized image; the rest is PIL's black padding
    x_lo, x_hi = max(cx0, 0), min(cx1, new_w)
    y_lo, y_hi = max(cy0, 0), min(cy1, new_h)
    if x_lo >= x_hi or y_lo >= y_hi:
        return out
    window = out[y_lo - cy0:y_hi - cy0, x_lo - cx0:x_hi - cx0]
    if (new_w, new_h) == (width, height):  # PIL copies: no resampling at all
        window[...] = np.asarray(img.crop((x_lo, y_lo, x_hi, y_hi)))
        return out
    hx, hn, hk = resample_coeffs(width, new_w, x_lo, x_hi - x_lo)
    vy, vn, vk = resample_coeffs(height, new_h, y_lo, y_hi - y_lo)
    r0, r1 = int(vy.min()), int((vy + vn).max())
    c0, c1 = int(hx.min()), int((hx + hn).max())
    # PIL transposes the few source rows/columns needed faster than numpy can
    part = img.crop((c0, r0, c1, r1)).transpose(TRANSPOSE)
    src_t = np.asarray(part).reshape(c1 - c0, (r1 - r0) * 3)
    nx = x_hi - x_lo
    tmp = np.empty((r1 - r0, nx, 3), np.uint8)
    _hpass(src_t, hx - c0, hn, hk, tmp)
    ny = y_hi - y_lo
    if window.flags.c_contiguous:
        _vpass(tmp.reshape(r1 - r0, nx * 3), vy - r0, vn, vk, window.reshape(ny, nx * 3))
    else:
        res = np.empty((ny, nx * 3), np.uint8)
        _vpass(tmp.reshape(r1 - r0, nx * 3), vy - r0, vn, vk, res)
        window[...] = res.reshape(ny, nx, 3)
    return out


def _reference_resize_crop(img, size, crop):
    return np.asarray(img.resize(size).crop(crop))


@functools.lru_cache(maxsize=1)
def _resize_verified():
    """One check per process: a random image through both paths, two geometries."""
    if numba is None:
        return False
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))
    for size, crop in (((75, 42), (3, 10, 73, 36)), ((61, 34), (-4, 8, 66, 34))):
        if not np.array_equal(_resize_crop(img, size, crop), _reference_resize_crop(img, size, crop)):
            warnings.warn('fast_image: resize_crop differs from PIL on this platform; using PIL', stacklevel=2)
            return False
    return True


def resize_crop(img, size, crop):
    """np.asarray(img.resize(size).crop(crop)) for an RGB PIL image, computing
    only the cropped pixels. size = (w, h); crop = (left, upper, right, lower)."""
    if img.mode != 'RGB' or not _resize_verified():
        return _reference_resize_crop(img, size, crop)
    return _resize_crop(img, size, tuple(int(c) for c in crop))



def rotation_fixed(angle, width, height):
    """Pillow's Image.rotate(angle) (no expand/center/translate) as the 16.16
    fixed-point matrix its C code (affine_fixed) steps through, or None where
    Pillow takes another path (0/180 degrees, near-axis scaling, huge images)."""
    angle = angle % 360.0
    if angle in (0.0, 180.0) or (angle in (90.0, 270.0) and width == height):
        return None
    center = (width / 2, height / 2)
    angle = -math.radians(angle)
    matrix = [round(math.cos(angle), 15), round(math.sin(angle), 15), 0.0,
              round(-math.sin(angle), 15), round(math.cos(angle), 15), 0.0]
    a, b, c, d, e, f = matrix
    matrix[2], matrix[5] = a * -center[0] + b * -center[1] + c, d * -center[0] + e * -center[1] + f
    matrix[2] += center[0]
    matrix[5] += center[1]
    if matrix[1] == 0 and matrix[3] == 0:  # ImagingScaleAffine
        return None
    for x, y in ((0, 0), (width, height), (0, height), (width, 0)):  # check_fixed
        if not (abs(x * matrix[0] + y * matrix[1] + matrix[2]) < 32768.0
                and abs(x * matrix[3] + y * matrix[4] + matrix[5]) < 32768.0):
            return None

    def fix(v):
        return math.floor(v * 65536.0 + 0.5)

    m = matrix
    return np.array([fix(m[0]), fix(m[1]), fix(m[2] + m[0] * 0.5 + m[1] * 0.5),
                     fix(m[3]), fix(m[4]), fix(m[5] + m[3] * 0.5 + m[4] * 0.5)], np.int64)


def _reference_flip_rotate(arr, flip, angle):
    img = Image.fromarray(arr)
    if flip:
        img = img.transpose(method=Image.FLIP_LEFT_RIGHT)
    return np.asarray(img.rotate(angle))


@functools.lru_cache(maxsize=1)
def _rotate_verified():
    if numba is None:
        return False
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 101, 3), dtype=np.uint8)
    for angle, flip in ((5.4, False), (-3.7, True), (-0.001, False), (0.37, True)):
        fixed = rotation_fixed(angle, arr.shape[1], arr.shape[0])
        out = np.empty_like(arr)
        _flip_rotate(arr, flip, fixed, out)
        if not np.array_equal(out, _reference_flip_rotate(arr, flip, angle)):
            warnings.warn('fast_image: flip_rotate differs from PIL on this platform; using PIL', stacklevel=2)
            return False
    return True


def flip_rotate(arr, flip, angle):
    """np.asarray of PIL's flip (if flip) then rotate(angle) of an (H, W, 3)
    uint8 array, in one pass where Pillow's fixed-point path applies."""
    if float(angle) % 360.0 == 0.0:  # PIL: rotate(0) is a copy (the test pipeline's case)
        return np.ascontiguousarray(arr[:, ::-1]) if flip else arr
    fixed = rotation_fixed(float(angle), arr.shape[1], arr.shape[0])
    if fixed is None or not _rotate_verified():
        return _reference_flip_rotate(arr, flip, angle)
    out = np.empty_like(arr)
    _flip_rotate(np.ascontiguousarray(arr), bool(flip), fixed, out)
    return out

@functools.lru_cache(maxsize=8)
def _normalize_lut(mean, std):
    from mmcv.image.photometric import imnormalize
    ramp = np.repeat(np.arange(256, dtype=np.float32)[None, :, None], 3, axis=2)
    # (1, 256, 3) -> lut[c, v]: imnormalize's value for byte v in output channel c
    table = imnormalize(ramp, np.array(mean, np.float32), np.array(std, np.float32), True)[0]
    return np.ascontiguousarray(table.T)


_lut_checked = {}


def _reference_normalize(img, mean, std):
    import torch
    from mmcv.image.photometric import imnormalize

    ref = imnormalize(np.array(img), np.asarray(mean, np.float32), np.asarray(std, np.float32), True)
    return torch.tensor(ref).float().permute(2, 0, 1).contiguous()


def normalize_stack(imgs, mean, std):
    """torch.stack([mmlabNormalize(img) for img in imgs]) bit for bit, from (H, W, 3)
    uint8 arrays, written straight into the (N, 3, H, W) float32 result."""
    import torch

    shapes = {getattr(img, 'shape', None) for img in imgs}
    shape = shapes.pop() if len(shapes) == 1 else None
    if numba is None or shape is None or len(shape) != 3 or shape[2] != 3 or \
            any(img.dtype != np.uint8 for img in imgs):
        return torch.stack([_reference_normalize(img, mean, std) for img in imgs])
    key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    lut = _normalize_lut(*key)
    out = np.empty((len(imgs), 3, shape[0], shape[1]), np.float32)
    for i, img in enumerate(imgs):
        _lut_chw(np.ascontiguousarray(img), lut, out[i])
    out = torch.from_numpy(out)
    shape_key = key + (shape,)
    if shape_key not in _lut_checked:  # cv2 could in principle compute per position
        _lut_checked[shape_key] = torch.equal(out[0], _reference_normalize(imgs[0], mean, std))
        if not _lut_checked[shape_key]:
            warnings.warn('fast_image: lookup normalisation differs from imnormalize here; using imnormalize',
                          stacklevel=2)
    if _lut_checked[shape_key]:
        return out
    return torch.stack([_reference_normalize(img, mean, std) for img in imgs])
