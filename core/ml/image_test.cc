#include "core/ml/image.h"

#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "core/files.h"
#include "core/testing/paths.h"

namespace kennel::core {
namespace {

std::string Encode(const cv::Mat& bgr, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf, params));
  return std::string(buf.begin(), buf.end());
}

// Left half pure red, right half pure blue (in BGR for OpenCV's encoder).
cv::Mat RedBlue(int w, int h) {
  cv::Mat m(h, w, CV_8UC3, cv::Scalar(0, 0, 255));
  m(cv::Rect(w / 2, 0, w - w / 2, h)).setTo(cv::Scalar(255, 0, 0));
  return m;
}

void ExpectInvalid(const absl::StatusOr<cv::Mat>& r, const std::string& words) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status();
}

v1::PreprocessSpec Spec(int h, int w, int channels, int shorter = 0) {
  v1::PreprocessSpec spec;
  spec.set_height(h);
  spec.set_width(w);
  spec.set_channels(channels);
  spec.set_resize_shorter(shorter);
  return *NormalizePreprocessSpec(spec);
}

TEST(ImageTest, ProbeReadsSizeFromHeaders) {
  auto jpeg = ProbeImage(Encode(RedBlue(500, 375), ".jpg"));
  ASSERT_TRUE(jpeg.ok());
  EXPECT_EQ(jpeg->format, ImageFormat::kJpeg);
  EXPECT_EQ(jpeg->width, 500);
  EXPECT_EQ(jpeg->height, 375);
  EXPECT_EQ(jpeg->channels, 3);
  auto png = ProbeImage(Encode(RedBlue(31, 17), ".png"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png->format, ImageFormat::kPng);
  EXPECT_EQ(png->width, 31);
  EXPECT_EQ(png->height, 17);
}

// Found by fuzz/image_probe_fuzzer: a JPEG whose frame header says 0x0 passed the probe.
TEST(ImageTest, AZeroSizedFrameIsRefusedByTheProbe) {
  std::string jpeg("\xFF\xD8", 2);
  jpeg += std::string("\xFF\xC2\x00\x0B\x08\x00\x00\x00\x00\x01\x01\x11\x00", 13);  // SOF2: 0x0, 1 component.
  jpeg += std::string("\xFF\xDA\x00\x08\x01\x01\x00\x00\x3F\x00", 10);                 // SOS.
  jpeg += std::string("\x12\x34\xFF\xD9", 4);
  auto probe = ProbeImage(jpeg);
  EXPECT_EQ(probe.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(probe.status().message().find("no pixels (0x0)"), std::string::npos) << probe.status();
}

TEST(ImageTest, PngDecodesToExactRgbPixels) {
  auto img = DecodeImage(Encode(RedBlue(8, 4), ".png"), 3);
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_EQ(img->type(), CV_8UC3);
  EXPECT_EQ(img->at<cv::Vec3b>(0, 0), cv::Vec3b(255, 0, 0));  // RGB order: red.
  EXPECT_EQ(img->at<cv::Vec3b>(3, 7), cv::Vec3b(0, 0, 255));  // Blue.
}

TEST(ImageTest, EmptyInputIsRejected) { ExpectInvalid(DecodeImage("", 3), "empty"); }

TEST(ImageTest, RandomBytesAreRejected) {
  std::string noise(4096, '\0');
  uint32_t x = 12345;
  for (char& c : noise) c = static_cast<char>((x = x * 1103515245 + 12345) >> 24);
  ExpectInvalid(DecodeImage(noise, 3), "not a JPEG or PNG");
  ExpectInvalid(DecodeImage("\xFF\xD8\xFF", 3), "truncated JPEG");
  ExpectInvalid(DecodeImage("\x89PNG\r\n\x1A\n\0\0", 3), "truncated PNG");
}

TEST(ImageTest, TruncatedJpegIsRejected) {
  cv::Mat noisy(240, 320, CV_8UC3);
  cv::randu(noisy, 0, 255);
  std::string jpeg = Encode(noisy, ".jpg");
  ASSERT_TRUE(DecodeImage(jpeg, 3).ok());
  ExpectInvalid(DecodeImage(jpeg.substr(0, jpeg.size() / 2), 3), "truncated JPEG");
  ExpectInvalid(DecodeImage(jpeg.substr(0, 300), 3), "truncated");
}

TEST(ImageTest, TruncatedPngIsRejected) {
  cv::Mat noisy(64, 64, CV_8UC3);
  cv::randu(noisy, 0, 255);
  std::string png = Encode(noisy, ".png");
  ExpectInvalid(DecodeImage(png.substr(0, png.size() / 2), 3), "truncated PNG");
}

TEST(ImageTest, ZeroSizedHeaderIsRejected) {
  std::string png = Encode(RedBlue(8, 4), ".png");
  for (int i = 16; i < 24; ++i) png[i] = 0;  // IHDR width and height.
  ExpectInvalid(DecodeImage(png, 3), "no pixels");
}

TEST(ImageTest, HugeHeaderIsRejectedBeforeDecoding) {
  std::string png = Encode(RedBlue(8, 4), ".png");
  const uint32_t side = 100000;
  for (int at : {16, 20}) {
    for (int b = 0; b < 4; ++b) png[at + b] = static_cast<char>((side >> (24 - 8 * b)) & 0xff);
  }
  ExpectInvalid(DecodeImage(png, 3), "100000x100000");
  // The same for a JPEG frame header claiming 65000 x 65000.
  std::string jpeg = Encode(RedBlue(16, 16), ".jpg");
  size_t sof = jpeg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  for (int at : {5, 7}) {
    jpeg[sof + at] = static_cast<char>(0xFD);
    jpeg[sof + at + 1] = static_cast<char>(0xE8);
  }
  ExpectInvalid(DecodeImage(jpeg, 3), "65000x65000");
}

TEST(ImageTest, EncodedSizeLimitIsEnforced) {
  std::string png = Encode(RedBlue(64, 64), ".png");
  ExpectInvalid(DecodeImage(png, 3, DecodeLimits{.max_encoded_bytes = 10}), "over the limit");
}

TEST(ImageTest, GrayscaleJpegBecomesThreeEqualChannels) {
  cv::Mat gray(16, 16, CV_8UC1, cv::Scalar(200));
  auto img = DecodeImage(Encode(gray, ".jpg"), 3);
  ASSERT_TRUE(img.ok());
  ASSERT_EQ(img->channels(), 3);
  const cv::Vec3b px = img->at<cv::Vec3b>(8, 8);
  EXPECT_NEAR(px[0], 200, 2);
  EXPECT_EQ(px[0], px[1]);
  EXPECT_EQ(px[1], px[2]);
}

TEST(ImageTest, ColourToGrayscaleUsesLuma) {
  auto img = DecodeImage(Encode(RedBlue(8, 4), ".png"), 1);
  ASSERT_TRUE(img.ok());
  ASSERT_EQ(img->channels(), 1);
  EXPECT_NEAR(img->at<uint8_t>(0, 0), 76, 1);  // 0.299 * 255.
  EXPECT_NEAR(img->at<uint8_t>(0, 7), 29, 1);  // 0.114 * 255.
}

TEST(ImageTest, AlphaChannelIsDropped) {
  cv::Mat bgra(4, 4, CV_8UC4, cv::Scalar(10, 20, 30, 0));  // Fully transparent.
  auto img = DecodeImage(Encode(bgra, ".png"), 3);
  ASSERT_TRUE(img.ok());
  ASSERT_EQ(img->channels(), 3);
  EXPECT_EQ(img->at<cv::Vec3b>(1, 1), cv::Vec3b(30, 20, 10));
}

TEST(ImageTest, SixteenBitPngIsScaledTo8Bit) {
  cv::Mat deep(4, 4, CV_16UC3, cv::Scalar(0x1234, 0x8000, 0xFFFF));
  auto probe = ProbeImage(Encode(deep, ".png"));
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->bit_depth, 16);
  auto img = DecodeImage(Encode(deep, ".png"), 3);
  ASSERT_TRUE(img.ok());
  ASSERT_EQ(img->depth(), CV_8U);
  EXPECT_EQ(img->at<cv::Vec3b>(0, 0), cv::Vec3b(0xFF, 0x80, 0x12));
}

TEST(ImageTest, CmykJpegIsConvertedToRgb) {
  auto bytes = ReadFile(testing::FixtureDir() + "/cmyk.jpg");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(ProbeImage(*bytes)->channels, 4);
  auto img = DecodeImage(*bytes, 3);
  ASSERT_TRUE(img.ok()) << img.status();
  const cv::Vec3b cyan = img->at<cv::Vec3b>(16, 8), magenta = img->at<cv::Vec3b>(16, 56);
  EXPECT_LT(cyan[0], 40);   // Cyan: no red, full green and blue.
  EXPECT_GT(cyan[1], 215);
  EXPECT_GT(cyan[2], 215);
  EXPECT_GT(magenta[0], 215);  // Magenta: red and blue, no green.
  EXPECT_LT(magenta[1], 40);
  EXPECT_GT(magenta[2], 215);
}

TEST(ImageTest, PalettePngIsExpanded) {
  auto bytes = ReadFile(testing::FixtureDir() + "/palette.png");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto img = DecodeImage(*bytes, 3);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->at<cv::Vec3b>(5, 5), cv::Vec3b(255, 0, 0));
  EXPECT_EQ(img->at<cv::Vec3b>(5, 50), cv::Vec3b(0, 0, 255));
}

TEST(ImageTest, LargeJpegIsDecodedAtReducedScale) {
  cv::Mat big(600, 800, CV_8UC3, cv::Scalar(0, 128, 255));
  std::string jpeg = Encode(big, ".jpg");
  auto reduced = DecodeImage(jpeg, 3, {}, 224);
  ASSERT_TRUE(reduced.ok());
  EXPECT_EQ(reduced->cols, 400);  // 600 / 2 = 300 >= 224, 600 / 4 < 224.
  EXPECT_EQ(reduced->rows, 300);
  auto full = DecodeImage(jpeg, 3);
  EXPECT_EQ(full->cols, 800);
}

// DecodeImage decodes JPEGs with libjpeg-turbo straight to RGB; OpenCV's imdecode (BGR, then
// swapped) is what it replaced: every pixel must be the same, at every scale, colour and gray,
// progressive and odd-sized alike.
TEST(ImageTest, JpegsDecodeToExactlyOpenCvsPixels) {
  cv::RNG rng(11);
  cv::Mat photo(375, 500, CV_8UC3);
  cv::Mat small(15, 20, CV_8UC3);
  rng.fill(small, cv::RNG::UNIFORM, 0, 255);
  cv::resize(small, photo, photo.size(), 0, 0, cv::INTER_CUBIC);
  cv::Mat noise(photo.size(), CV_8UC3);
  rng.fill(noise, cv::RNG::NORMAL, 0, 20);
  photo += noise;
  cv::Mat gray;
  cv::cvtColor(photo, gray, cv::COLOR_BGR2GRAY);
  const std::vector<std::pair<std::string, std::string>> files = {
      {"colour 4:2:0", Encode(photo, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90})},
      {"colour, low chroma quality", Encode(photo, ".jpg", {cv::IMWRITE_JPEG_CHROMA_QUALITY, 40})},
      {"progressive", Encode(photo, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1})},
      {"gray", Encode(gray, ".jpg")},
      {"odd size", Encode(photo(cv::Rect(0, 0, 333, 251)), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 75})},
  };
  for (const auto& [what, jpeg] : files) {
    for (int channels : {1, 3}) {
      for (int reduce : {1, 2, 4, 8}) {
        int flags = channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR;
        if (reduce == 2) flags = channels == 1 ? cv::IMREAD_REDUCED_GRAYSCALE_2 : cv::IMREAD_REDUCED_COLOR_2;
        if (reduce == 4) flags = channels == 1 ? cv::IMREAD_REDUCED_GRAYSCALE_4 : cv::IMREAD_REDUCED_COLOR_4;
        if (reduce == 8) flags = channels == 1 ? cv::IMREAD_REDUCED_GRAYSCALE_8 : cv::IMREAD_REDUCED_COLOR_8;
        cv::Mat want = cv::imdecode(cv::Mat(1, static_cast<int>(jpeg.size()), CV_8U, const_cast<char*>(jpeg.data())), flags);
        if (channels == 3) cv::cvtColor(want, want, cv::COLOR_BGR2RGB);
        // A hint that makes DecodeImage pick this scale for both sizes (shorter sides 375 and 251).
        auto got = DecodeImage(jpeg, channels, {}, reduce == 1 ? 0 : 251 / reduce);
        ASSERT_TRUE(got.ok()) << what << ": " << got.status();
        ASSERT_EQ(got->size(), want.size()) << what << " channels " << channels << " reduce " << reduce;
        ASSERT_EQ(got->type(), want.type()) << what;
        EXPECT_EQ(cv::norm(*got, want, cv::NORM_INF), 0) << what << " channels " << channels << " reduce " << reduce;
      }
    }
  }
}

TEST(ImageTest, PreprocessNormalisesIntoChw) {
  cv::Mat rgb(2, 2, CV_8UC3, cv::Scalar(255, 0, 51));
  v1::PreprocessSpec spec = Spec(2, 2, 3);
  spec.set_mean(0, 0.5f);
  spec.set_std(0, 0.25f);
  std::vector<float> out(PreprocessedSize(spec));
  ASSERT_TRUE(PreprocessInto(rgb, spec, out.data()).ok());
  EXPECT_FLOAT_EQ(out[0], (1.0f - 0.5f) / 0.25f);  // R plane.
  EXPECT_FLOAT_EQ(out[4], 0.0f);                   // G plane.
  EXPECT_FLOAT_EQ(out[8], 0.2f);                   // B plane.
}

TEST(ImageTest, ResizeShorterThenCenterCrop) {
  // 40x20 image whose column x holds value 4 * x; shorter side 20 -> 10 halves it to 20x10,
  // and the 10x10 center crop keeps source columns 10..29.
  cv::Mat img(20, 40, CV_8UC1);
  for (int x = 0; x < 40; ++x) img.col(x).setTo(4 * x);
  v1::PreprocessSpec spec = Spec(10, 10, 1, 10);
  spec.set_interpolation(v1::NEAREST);
  std::vector<float> out(PreprocessedSize(spec));
  ASSERT_TRUE(PreprocessInto(img, spec, out.data()).ok());
  EXPECT_FLOAT_EQ(out[0] * 255, 4 * 10);
  EXPECT_FLOAT_EQ(out[9] * 255, 4 * 28);
}

TEST(ImageTest, BadPreprocessSpecsAreRejected) {
  v1::PreprocessSpec spec;
  EXPECT_FALSE(NormalizePreprocessSpec(spec).ok());  // No size.
  spec.set_height(224);
  spec.set_width(224);
  spec.set_resize_shorter(100);
  EXPECT_FALSE(NormalizePreprocessSpec(spec).ok());  // Crop larger than the resize.
  spec.set_resize_shorter(256);
  spec.add_mean(0.5f);
  EXPECT_FALSE(NormalizePreprocessSpec(spec).ok());  // One mean for three channels.
}

TEST(ImageTest, AugmentationIsSeededAndVaries) {
  cv::Mat img(64, 96, CV_8UC3);
  cv::randu(img, 0, 255);
  v1::PreprocessSpec spec = Spec(32, 32, 3);
  std::vector<float> a(PreprocessedSize(spec)), b(a.size()), c(a.size());
  std::mt19937_64 r1(7), r2(7), r3(8);
  ASSERT_TRUE(AugmentInto(img, spec, {}, r1, a.data()).ok());
  ASSERT_TRUE(AugmentInto(img, spec, {}, r2, b.data()).ok());
  ASSERT_TRUE(AugmentInto(img, spec, {}, r3, c.data()).ok());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(ImageTest, FlipOnlyAugmentationMirrorsOrKeeps) {
  cv::Mat img(4, 4, CV_8UC1);
  for (int x = 0; x < 4; ++x) img.col(x).setTo(x * 10);
  v1::PreprocessSpec spec = Spec(4, 4, 1);
  Augmentation aug{.random_resized_crop = false};
  int flipped = 0;
  for (int seed = 0; seed < 20; ++seed) {
    std::vector<float> out(16);
    std::mt19937_64 rng(seed);
    ASSERT_TRUE(AugmentInto(img, spec, aug, rng, out.data()).ok());
    const bool mirrored = out[0] > out[3];
    flipped += mirrored;
    EXPECT_FLOAT_EQ(out[mirrored ? 3 : 0] * 255, 0);
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 20);
}

}  // namespace
}  // namespace kennel::core
