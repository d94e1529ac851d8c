//! G.722 (ITU-T, 1988): 16 kHz audio split by a quadrature mirror filter into a lower
//! and a higher band, each coded by sub-band ADPCM; at 64 kbit/s the lower band takes 6
//! bits and the higher band 2 bits per pair of input samples. Integer arithmetic
//! throughout, as the standard specifies it; the block names in the comments are the
//! standard's (INVQAL, LOGSCL, SCALEL, UPPOL1, ...).

/// Quantizer decision levels of the lower band (6-bit), scaled by 2^-12 of the step.
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940, 1023, 1121,
    1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// Lower-band codes for negative and positive differences.
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8,
    7, 6, 5, 4, 0,
];
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37,
    36, 35, 34, 33, 32, 0,
];
/// Log scale factor multipliers of the lower band.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// The antilog table of the scale factor.
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834, 2896,
    2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Inverse quantizer outputs: 4-bit (the predictor's), 6-bit (the decoder's output), 2-bit.
const QM4: [i32; 16] =
    [0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584, 1200, 0];
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232, -9360,
    -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776, -2400, -2032, -1688,
    -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192, 10232, 9360, 8576, 7856,
    7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136,
    -432, -136,
];
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// Higher-band codes and log scale factor multipliers.
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [usize; 4] = [2, 1, 2, 1];
/// The 24-tap QMF, symmetric: 12 distinct coefficients.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// One sub-band's adaptive predictor and scale factor.
#[derive(Clone, Debug, Default)]
struct Band {
    s: i32,
    sp: i32,
    sz: i32,
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band { det, ..Band::default() }
    }

    /// Block 4: reconstruction, pole and zero predictor update, prediction.
    fn block4(&mut self, dx: i32) {
        // RECONS, PARREC
        self.d[0] = dx;
        self.r[0] = sat(self.s + dx);
        self.p[0] = sat(self.sz + dx);
        // UPPOL2
        let sg0 = self.p[0] >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
        let mut wd3 = (wd2 >> 7) + if sg0 == sg2 { 128 } else { -128 };
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);
        // UPPOL1
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        self.ap[1] = sat(wd1 + wd2);
        let wd3 = sat(15360 - self.ap[2]);
        self.ap[1] = self.ap[1].clamp(-wd3, wd3);
        // UPZERO
        let wd1 = if dx == 0 { 0 } else { 128 };
        let sg0 = dx >> 15;
        for i in 1..7 {
            let sgi = self.d[i] >> 15;
            let wd2 = if sgi == sg0 { wd1 } else { -wd1 };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = sat(wd2 + wd3);
        }
        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }
        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);
        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);
        // PREDIC
        self.s = sat(self.sp + self.sz);
    }

    /// LOGSCL and SCALEL: adapts the scale factor for a quantized difference.
    fn adapt(&mut self, w: i32, nb_max: i32, shift: i32) {
        let wd = (self.nb * 127) >> 7;
        self.nb = (wd + w).clamp(0, nb_max);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift - (self.nb >> 11);
        let wd3 = if wd2 < 0 { ILB[wd1] << -wd2 } else { ILB[wd1] >> wd2 };
        self.det = wd3 << 2;
    }
}

/// The G.722 encoder at 64 kbit/s: 320 samples (20 ms at 16 kHz) make 160 bytes.
#[derive(Clone, Debug)]
pub struct Encoder {
    x: [i32; 24],
    band: [Band; 2],
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Encoder { x: [0; 24], band: [Band::new(32), Band::new(8)] }
    }

    /// Encodes pairs of 16 kHz samples into bytes; an odd last sample is ignored.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        for pair in pcm.chunks_exact(2) {
            // the transmit QMF
            self.x.copy_within(2.., 0);
            self.x[22] = i32::from(pair[0]);
            self.x[23] = i32::from(pair[1]);
            let (mut sumodd, mut sumeven) = (0i32, 0i32);
            for i in 0..12 {
                sumodd += self.x[2 * i] * QMF[i];
                sumeven += self.x[2 * i + 1] * QMF[11 - i];
            }
            let xlow = (sumeven + sumodd) >> 14;
            let xhigh = (sumeven - sumodd) >> 14;

            // lower band: SUBTL, QUANTL
            let el = sat(xlow - self.band[0].s);
            let wd = if el >= 0 { el } else { -(el + 1) };
            let mut i = 1;
            while i < 30 && wd >= (Q6[i] * self.band[0].det) >> 12 {
                i += 1;
            }
            let ilow = if el < 0 { ILN[i] } else { ILP[i] };
            // INVQAL, LOGSCL, SCALEL, then the predictor
            let ril = (ilow >> 2) as usize;
            let dlow = (self.band[0].det * QM4[ril]) >> 15;
            self.band[0].adapt(WL[RL42[ril]], 18432, 8);
            self.band[0].block4(dlow);

            // higher band: SUBTH, QUANTH
            let eh = sat(xhigh - self.band[1].s);
            let wd = if eh >= 0 { eh } else { -(eh + 1) };
            let mih = if wd >= (564 * self.band[1].det) >> 12 { 2 } else { 1 };
            let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
            let dhigh = (self.band[1].det * QM2[ihigh as usize]) >> 15;
            self.band[1].adapt(WH[RH2[ihigh as usize]], 22528, 10);
            self.band[1].block4(dhigh);

            out.push(((ihigh << 6) | ilow) as u8);
        }
    }
}

/// The G.722 decoder at 64 kbit/s: each byte gives two 16 kHz samples.
#[derive(Clone, Debug)]
pub struct Decoder {
    x: [i32; 24],
    band: [Band; 2],
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Decoder { x: [0; 24], band: [Band::new(32), Band::new(8)] }
    }

    /// Decodes bytes into 16 kHz samples (two per byte).
    pub fn decode(&mut self, codes: &[u8], out: &mut Vec<i16>) {
        for &code in codes {
            let ilow = usize::from(code & 0x3F);
            let ihigh = usize::from((code >> 6) & 0x03);

            // lower band: INVQBL, RECONS, LIMIT
            let wd2 = (self.band[0].det * QM6[ilow]) >> 15;
            let rlow = (self.band[0].s + wd2).clamp(-16384, 16383);
            // INVQAL for the predictor, LOGSCL, SCALEL
            let ril = ilow >> 2;
            let dlow = (self.band[0].det * QM4[ril]) >> 15;
            self.band[0].adapt(WL[RL42[ril]], 18432, 8);
            self.band[0].block4(dlow);

            // higher band: INVQAH, RECONS, LIMIT, LOGSCH, SCALEH
            let dhigh = (self.band[1].det * QM2[ihigh]) >> 15;
            let rhigh = (dhigh + self.band[1].s).clamp(-16384, 16383);
            self.band[1].adapt(WH[RH2[ihigh]], 22528, 10);
            self.band[1].block4(dhigh);

            // the receive QMF
            self.x.copy_within(2.., 0);
            self.x[22] = rlow + rhigh;
            self.x[23] = rlow - rhigh;
            let (mut xout1, mut xout2) = (0i32, 0i32);
            for i in 0..12 {
                xout2 += self.x[2 * i] * QMF[i];
                xout1 += self.x[2 * i + 1] * QMF[11 - i];
            }
            out.push(sat(xout1 >> 11) as i16);
            out.push(sat(xout2 >> 11) as i16);
        }
    }
}
