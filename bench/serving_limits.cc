// kennel-bench-limits: the T2 helpers that need Kennel's C++ core.
//   make-artifact --arch small_cnn|resnet18|resnet50 --out DIR   a seeded, randomly initialised artifact
//   register --artifact DIR --coordinator HOST:PORT      uploads it as a model version (bench/autoscale.py)
//   make-jpegs --out DIR [--count N] [--width W --height H]   JPEGs, 500x375 by default (the dog-photo size)
//   make-dataset --out DIR [--classes C] [--count N]     a dogImages-style folder of such JPEGs:
//       train/ with N per class, valid/ and test/ with N/8 per class (training benchmarks)
//   limits --artifact DIR (--images DIR | --fashion N) [--threads T] [--device D] [--precision P]
//       raw forward throughput per batch size (the best last) and preprocessing throughput
//       alone (decode + resize + normalise) with T threads, one line each. The model runs as
//       the inference node runs it (CreateBatchModel: float32 batch copied to the device,
//       converted there; on CUDA the --cuda_settings the node would use).
//   decode --images DIR [--size 224]   per decode thread: Kennel's preprocessing to SIZExSIZE
//       (decode with the reduced-scale hint, resize, crop, normalise) against libjpeg-turbo's own
//       full-size decode of the same files (jpeg_read_scanlines: what tjDecompress2 runs), and
//       their ratio.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <grpcpp/create_channel.h>
#include <chrono>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <thread>

#ifdef KENNEL_BENCH_LIBJPEG
#include <jpeglib.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/ml/artifact.h"
#include "core/ml/dataset.h"
#include "core/files.h"
#include "core/ml/image.h"
#include "core/member/coordinator_client.h"
#include "core/process_setup.h"
#include "kennel/v1/coordinator.grpc.pb.h"
#include "inference_node/serving_model.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
namespace v1 = kennel::v1;

namespace {

int MakeArtifact(const std::string& arch, const std::string& out) {
  v1::ModelManifest m;
  m.set_version(1);
  if (arch == "small_cnn") {
    m.set_name("fashion-bench");
    m.mutable_model()->set_architecture(v1::SMALL_CNN);
    m.mutable_model()->set_num_classes(10);
    m.mutable_model()->set_in_channels(1);
    for (int i = 0; i < 10; ++i) m.add_class_names(absl::StrCat("class ", i));
    m.mutable_preprocess()->set_height(28);
    m.mutable_preprocess()->set_width(28);
    m.mutable_preprocess()->set_channels(1);
    m.mutable_preprocess()->add_mean(0.2860f);
    m.mutable_preprocess()->add_std(0.3530f);
  } else {
    m.set_name(arch == "resnet18" ? "dogs18-bench" : "dogs-bench");
    m.mutable_model()->set_architecture(arch == "resnet18" ? v1::RESNET18 : v1::RESNET50);
    m.mutable_model()->set_num_classes(133);
    m.mutable_model()->set_in_channels(3);
    for (int i = 0; i < 133; ++i) m.add_class_names(absl::StrCat("Breed ", i + 1));
    m.mutable_preprocess()->set_height(224);
    m.mutable_preprocess()->set_width(224);
    m.mutable_preprocess()->set_resize_shorter(256);
    m.mutable_preprocess()->set_channels(3);
    for (float v : {0.485f, 0.456f, 0.406f}) m.mutable_preprocess()->add_mean(v);
    for (float v : {0.229f, 0.224f, 0.225f}) m.mutable_preprocess()->add_std(v);
  }
  torch::manual_seed(7);
  auto model = kennel::core::CreateModel(m.model());
  if (!model.ok()) return (std::cerr << model.status() << "\n", 1);
  fs::remove_all(out);
  auto s = kennel::core::WriteArtifact(out, m, **model);
  if (!s.ok()) return (std::cerr << s << "\n", 1);
  return 0;
}

// Uploads `artifact` to the coordinator's model store (plaintext: a loopback benchmark).
int Register(const std::string& artifact, const std::string& coordinator) {
  auto stub = v1::Coordinator::NewStub(grpc::CreateChannel(coordinator, grpc::InsecureChannelCredentials()));
  auto manifest = kennel::core::ReadManifest(artifact);
  if (!manifest.ok()) return (std::cerr << manifest.status() << "\n", 1);
  v1::ArtifactRef ref;
  ref.set_kind(v1::ArtifactRef::MODEL);
  ref.set_name(manifest->name());
  auto stored = kennel::core::UploadFolder(*stub, artifact, {kennel::core::kManifestFile, manifest->weights_file()},
                                           ref, absl::Minutes(5));
  if (!stored.ok()) return (std::cerr << stored.status() << "\n", 1);
  std::cout << "registered " << stored->name() << " version " << stored->version() << std::endl;
  return 0;
}

int MakeJpegs(const std::string& out, int count, uint64_t seed = 3, int width = 500, int height = 375) {
  fs::create_directories(out);
  cv::RNG rng(seed);
  for (int i = 0; i < count; ++i) {
    cv::Mat img(height, width, CV_8UC3);
    // Smooth colour fields with some texture: compresses like a photo, not like noise.
    cv::Mat small(15, 20, CV_8UC3);
    rng.fill(small, cv::RNG::UNIFORM, 0, 255);
    cv::resize(small, img, img.size(), 0, 0, cv::INTER_CUBIC);
    cv::Mat noise(img.size(), CV_8UC3);
    rng.fill(noise, cv::RNG::NORMAL, 0, 12);
    img += noise;
    cv::imwrite(absl::StrFormat("%s/%04d.jpg", out, i), img, {cv::IMWRITE_JPEG_QUALITY, 90});
  }
  return 0;
}

int MakeDataset(const std::string& out, int classes, int count) {
  for (int c = 0; c < classes; ++c) {
    const std::string folder = absl::StrFormat("%03d.Breed_%d", c + 1, c + 1);
    for (const auto& [split, n] : {std::pair<const char*, int>{"train", count}, {"valid", std::max(1, count / 8)},
                                   {"test", std::max(1, count / 8)}}) {
      if (int rc = MakeJpegs(absl::StrCat(out, "/", split, "/", folder), n, 1000 * c + n); rc != 0) return rc;
    }
  }
  return 0;
}

int Limits(const std::string& artifact, const std::string& images_dir, int fashion, int threads,
           const std::string& device, const std::string& precision, const std::string& cuda_settings,
           int only_batch) {
  auto placement = kennel::inference::ResolvePlacement(device, precision);
  if (!placement.ok()) return (std::cerr << placement.status() << "\n", 1);
  auto tuning = kennel::inference::ParseCudaTuning(cuda_settings);
  if (!tuning.ok()) return (std::cerr << tuning.status() << "\n", 2);
  auto loaded = kennel::core::LoadArtifact(artifact);
  if (!loaded.ok()) return (std::cerr << loaded.status() << "\n", 1);
  const bool cuda = placement->device.is_cuda();
  using kennel::inference::BatchModel;
  auto place = [&](const kennel::core::LoadedModel& m) -> std::unique_ptr<BatchModel> {
    auto model = kennel::inference::CreateBatchModel(m, *placement, *tuning, 256);
    if (!model.ok()) {
      std::cerr << model.status() << "\n";
      std::exit(1);
    }
    return *std::move(model);
  };
  // As the batcher runs it: the batch assembled where the model wants it (pinned on CUDA).
  auto forward = [&](BatchModel& m, const torch::Tensor& x) {
    torch::Tensor staged = m.NewBatch(x.size(0), x.sizes().slice(1));
    staged.copy_(x);
    auto out = m.Run(staged);
    if (!out.ok()) {
      std::cerr << out.status() << "\n";
      std::exit(1);
    }
  };
  std::unique_ptr<BatchModel> model = place(*loaded);
  if (cuda) std::cout << "CUDA settings: " << kennel::inference::CudaTuningText(*tuning) << "\n";
  const auto& spec = loaded->manifest.preprocess();
  std::vector<std::string> payloads;
  if (!images_dir.empty()) {
    for (const auto& e : fs::directory_iterator(images_dir)) payloads.push_back(*kennel::core::ReadFile(e.path().string()));
  } else {
    auto index = *kennel::core::IndexFashionMnist(kennel::core::kDebianFashionMnistRoot, "test");
    auto reader = *kennel::core::DatasetReader::Create(index, kennel::core::kDebianFashionMnistRoot);
    for (int i = 0; i < fashion; ++i) {
      std::vector<uchar> buf;
      cv::imencode(".png", *reader->Load(i, 1), buf);
      payloads.emplace_back(buf.begin(), buf.end());
    }
  }
  // The model runs on the real images, preprocessed once, each batch different: a tensor
  // repeated in a loop lets the branch predictor learn max pooling's pattern and flatters
  // small batches (batch 1 looked 2x faster per image than it is on distinct inputs).
  c10::InferenceMode guard;
  torch::Tensor pool = torch::empty({static_cast<int64_t>(payloads.size()), spec.channels(), spec.height(), spec.width()});
  for (size_t i = 0; i < payloads.size(); ++i) {
    auto img = kennel::core::DecodeImage(payloads[i], spec.channels(), {}, kennel::core::DecodeHint(spec));
    absl::Status ok = img.ok() ? kennel::core::PreprocessInto(*img, spec, pool[static_cast<int64_t>(i)].data_ptr<float>())
                               : img.status();
    if (!ok.ok()) return (std::cerr << "image " << i << ": " << ok << "\n", 1);
  }
  // Batch r of size b: images r*b .. r*b+b-1 of the pool, cycling; built before timing.
  auto batches_of = [&pool](int batch) {
    std::vector<torch::Tensor> out;
    const int64_t n = pool.size(0);
    const int64_t count = std::min<int64_t>(256, (n + batch - 1) / batch);
    for (int64_t r = 0; r < count; ++r) {
      out.push_back(pool.index_select(0, torch::arange(r * batch, (r + 1) * batch) % n));
    }
    return out;
  };
  torch::set_num_threads(threads);
  const bool big = spec.height() > 64;
  double best = 0;
  int best_batch = 0;
  const std::vector<int> sizes = only_batch > 0 ? std::vector<int>{only_batch}
                                 : cuda ? std::vector<int>{1, 8, 32, 64, 128}
                                 : big ? std::vector<int>{1, 4, 8, 16} : std::vector<int>{1, 8, 16, 32, 64, 128};
  for (int batch : sizes) {
    const std::vector<torch::Tensor> xs = batches_of(batch);
    forward(*model, xs[0]);  // Warm-up.
    const int reps = cuda ? std::max(10, 2048 / batch) : big ? std::max(2, 24 / batch) : std::max(20, 4096 / batch);
    const auto t0 = Clock::now();
    for (int r = 0; r < reps; ++r) forward(*model, xs[static_cast<size_t>(r) % xs.size()]);
    if (cuda) torch::cuda::synchronize();
    const double ips = reps * batch / std::chrono::duration<double>(Clock::now() - t0).count();
    std::cout << absl::StrFormat("model batch %d: %.1f images/s\n", batch, ips);
    if (ips > best) {
      best = ips;
      best_batch = batch;
    }
  }
  std::string layout = absl::StrCat("1 instance x ", threads, " torch threads");
  // The other layout the server offers: `threads` instances of one thread each, run at once.
  if (threads > 1 && !cuda && only_batch == 0) {
    std::vector<std::unique_ptr<BatchModel>> copies;
    for (int t = 0; t < threads; ++t) copies.push_back(place(*kennel::core::LoadArtifact(artifact)));
    torch::set_num_threads(1);
    for (int batch : big ? std::vector<int>{1, 4, 8} : std::vector<int>{1, 8, 16, 32, 64}) {
      const std::vector<torch::Tensor> xs = batches_of(batch);
      const int reps = big ? std::max(2, 12 / batch) : std::max(20, 4096 / batch);
      std::vector<std::thread> runners;
      const auto t0 = Clock::now();
      for (int t = 0; t < threads; ++t) {
        runners.emplace_back([&, t] {
          c10::InferenceMode g;
          forward(*copies[t], xs[0]);
          // Each instance starts at another batch, as two instances see different requests.
          for (int r = 0; r < reps; ++r) forward(*copies[t], xs[static_cast<size_t>(r + t * 7) % xs.size()]);
        });
      }
      for (auto& r : runners) r.join();
      const double ips = threads * (reps + 1) * batch / std::chrono::duration<double>(Clock::now() - t0).count();
      std::cout << absl::StrFormat("model %d instances x 1 thread, batch %d: %.1f images/s\n", threads, batch, ips);
      if (ips > best) {
        best = ips;
        best_batch = batch;
        layout = absl::StrCat(threads, " instances x 1 torch thread");
      }
    }
    torch::set_num_threads(threads);
  }
  std::cout << absl::StrFormat("model best: %.1f images/s at batch %d (%s)\n", best, best_batch, layout);
  std::atomic<int64_t> next{0};
  const int64_t total = big ? 400 : 20000;
  std::vector<std::thread> workers;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::vector<float> out(static_cast<size_t>(kennel::core::PreprocessedSize(spec)));
      for (int64_t i; (i = next++) < total;) {
        auto img = kennel::core::DecodeImage(payloads[static_cast<size_t>(i) % payloads.size()], spec.channels(), {},
                                             kennel::core::DecodeHint(spec));
        if (img.ok()) (void)kennel::core::PreprocessInto(*img, spec, out.data());
      }
    });
  }
  for (auto& w : workers) w.join();
  std::cout << absl::StrFormat("preprocess: %.1f images/s (%d threads)\n",
                               total / std::chrono::duration<double>(Clock::now() - t0).count(), threads);
  return 0;
}

#ifdef KENNEL_BENCH_LIBJPEG
// libjpeg-turbo's decode alone, full size, to RGB: the floor any JPEG preprocessing stands on.
struct JpegError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};

bool DecodeOnly(const std::string& bytes, std::vector<uint8_t>& pixels) {
  jpeg_decompress_struct info;
  JpegError error;
  info.err = jpeg_std_error(&error.pub);
  error.pub.error_exit = [](j_common_ptr c) { std::longjmp(reinterpret_cast<JpegError*>(c->err)->jump, 1); };
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&info, TRUE);
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  const size_t stride = static_cast<size_t>(info.output_width) * 3;
  pixels.resize(stride * info.output_height);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = pixels.data() + stride * info.output_scanline;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}
#else
bool DecodeOnly(const std::string&, std::vector<uint8_t>&) { return false; }
#endif

// Images per second of `work` over the payloads, on one thread, for about `seconds`.
template <typename Work>
double Rate(const std::vector<std::string>& payloads, double seconds, Work work) {
  int64_t n = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (const auto& p : payloads) {
      if (!work(p)) return -1;
      ++n;
    }
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return n / elapsed;
}

int Decode(const std::string& images_dir, int size) {
#ifndef KENNEL_BENCH_LIBJPEG
  return (std::cerr << "decode: built without libjpeg's headers (libjpeg-dev)\n", 1);
#endif
  std::vector<std::string> payloads;
  for (const auto& e : fs::directory_iterator(images_dir)) payloads.push_back(*kennel::core::ReadFile(e.path().string()));
  if (payloads.empty()) return (std::cerr << images_dir << ": no images\n", 1);
  v1::PreprocessSpec spec;
  spec.set_height(size);
  spec.set_width(size);
  spec.set_resize_shorter(size * 8 / 7);  // torchvision's Resize(256) + CenterCrop(224).
  spec.set_channels(3);
  for (float v : {0.485f, 0.456f, 0.406f}) spec.add_mean(v);
  for (float v : {0.229f, 0.224f, 0.225f}) spec.add_std(v);
  auto probe = kennel::core::ProbeImage(payloads[0]);
  std::vector<float> out(static_cast<size_t>(kennel::core::PreprocessedSize(spec)));
  std::vector<uint8_t> pixels;
  const double kennel_rate = Rate(payloads, 3.0, [&](const std::string& p) {
    auto img = kennel::core::DecodeImage(p, 3, {}, kennel::core::DecodeHint(spec));
    return img.ok() && kennel::core::PreprocessInto(*img, spec, out.data()).ok();
  });
  const double turbo_rate = Rate(payloads, 3.0, [&](const std::string& p) { return DecodeOnly(p, pixels); });
  if (kennel_rate < 0 || turbo_rate < 0) return (std::cerr << images_dir << ": an image did not decode\n", 1);
  std::cout << absl::StrFormat(
      "decode %s (%s): kennel preprocessing to %dx%d %.1f images/s per thread; libjpeg-turbo decode alone "
      "(full size) %.1f images/s; ratio %.2f\n",
      images_dir, probe.ok() ? absl::StrCat(probe->width, "x", probe->height) : "?", size, size, kennel_rate,
      turbo_rate, kennel_rate / turbo_rate);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  kennel::core::TuneAllocator();  // As the inference node does: same allocator, fair limits.
  kennel::core::DisableMutexDeadlockDetection();
  CLI::App app("kennel-bench-limits: helpers for bench/t2_serving.py");
  app.require_subcommand(1);
  std::string arch = "small_cnn", out, artifact, images;
  int count = 64, fashion = 2000, threads = 2;
  std::string device = "cpu", precision = "fp32";
  auto* make = app.add_subcommand("make-artifact", "Write a seeded random artifact");
  make->add_option("--arch", arch)->check(CLI::IsMember({"small_cnn", "resnet18", "resnet50"}));
  make->add_option("--out", out)->required();
  std::string coordinator;
  auto* upload = app.add_subcommand("register", "Register an artifact folder with a coordinator as a model version");
  upload->add_option("--artifact", artifact)->required();
  upload->add_option("--coordinator", coordinator)->required();
  int width = 500, height = 375, size = 224;
  auto* jpegs = app.add_subcommand("make-jpegs", "Write photo-like JPEGs (500x375 unless told)");
  jpegs->add_option("--out", out)->required();
  jpegs->add_option("--count", count);
  jpegs->add_option("--width", width)->check(CLI::Range(8, 20000));
  jpegs->add_option("--height", height)->check(CLI::Range(8, 20000));
  auto* decode = app.add_subcommand("decode", "Preprocessing per thread against libjpeg-turbo's decode alone");
  decode->add_option("--images", images)->required();
  decode->add_option("--size", size, "The model's input side")->check(CLI::Range(8, 4096));
  int classes = 8;
  auto* dataset = app.add_subcommand("make-dataset", "Write a dogImages-style folder of 500x375 JPEGs");
  dataset->add_option("--out", out)->required();
  dataset->add_option("--classes", classes)->check(CLI::Range(1, 1000));
  dataset->add_option("--count", count, "Training images per class")->check(CLI::Range(1, 100000));
  auto* limits = app.add_subcommand("limits", "Raw model and preprocessing throughput");
  limits->add_option("--artifact", artifact)->required();
  limits->add_option("--images", images);
  limits->add_option("--fashion", fashion);
  limits->add_option("--threads", threads);
  limits->add_option("--device", device, "cpu, cuda or cuda:N");
  limits->add_option("--precision", precision, "fp32, bf16 or fp16 (CUDA)");
  std::string cuda_settings = "all";
  limits->add_option("--cuda_settings", cuda_settings, "As kennel-inference's: all, none or a comma list");
  int only_batch = 0;
  limits->add_option("--batch", only_batch, "Time this batch size only (0: a range)")->check(CLI::Range(0, 256));
  CLI11_PARSE(app, argc, argv);
  if (make->parsed()) return MakeArtifact(arch, out);
  if (upload->parsed()) return Register(artifact, coordinator);
  if (jpegs->parsed()) return MakeJpegs(out, count, 3, width, height);
  if (decode->parsed()) return Decode(images, size);
  if (dataset->parsed()) return MakeDataset(out, classes, count);
  return Limits(artifact, images, fashion, threads, device, precision, cuda_settings, only_batch);
}
