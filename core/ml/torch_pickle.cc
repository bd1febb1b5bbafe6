#include "core/ml/torch_pickle.h"

#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/ml/torch_errors.h"

namespace kennel::core::pickle {
namespace {

using Kind = Value::Kind;

// Empties every container's children. The caller holds a reference to each, so none is
// destroyed while this runs, and afterwards none holds another: no recursion, no cycle.
void BreakLinks(std::vector<ValuePtr>& containers) {
  for (auto& v : containers) {
    v->items.clear();
    v->entries.clear();
  }
  containers.clear();
}

// Deepest tensor a checkpoint may hold (torch itself allows 64 dimensions).
constexpr size_t kMaxTensorRank = 64;

// Legacy storage class names that torch.save still writes for each dtype.
const std::unordered_map<std::string, torch::Dtype>& StorageTypes() {
  static const auto* types = new std::unordered_map<std::string, torch::Dtype>{
      {"torch.FloatStorage", torch::kFloat32},   {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},    {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},     {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},      {"torch.BoolStorage", torch::kBool},
  };
  return *types;
}

bool IsAllowedGlobal(const std::string& name) {
  return name == "collections.OrderedDict" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_parameter" || StorageTypes().count(name) > 0;
}

class Machine {
 public:
  Machine(absl::string_view data, const StorageLoader& loader) : data_(data), loader_(loader) {}
  ~Machine() { BreakLinks(containers_); }

  absl::StatusOr<Unpickled> Run() {
    while (true) {
      ASSIGN_OR_RETURN(uint8_t op, U8());
      const size_t at = pos_ - 1;
      absl::Status status = Step(op);
      if (done_) break;
      if (!status.ok()) {
        return absl::Status(status.code(),
                            absl::StrCat(status.message(), " (pickle offset ", at, ")"));
      }
    }
    if (stack_.size() != 1) return Bad("pickle ended with an unbalanced stack");
    return Unpickled(stack_.back(), std::move(containers_));
  }

 private:
  static absl::Status Bad(absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("malformed checkpoint: ", what));
  }

  absl::StatusOr<absl::string_view> Bytes(size_t n) {
    if (data_.size() - pos_ < n) return Bad("truncated pickle data");
    absl::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  template <typename T>
  absl::StatusOr<T> Le() {
    ASSIGN_OR_RETURN(absl::string_view b, Bytes(sizeof(T)));
    T v;
    std::memcpy(&v, b.data(), sizeof(T));  // Pickle integers are little-endian, as is x86/arm.
    return v;
  }
  absl::StatusOr<uint8_t> U8() { return Le<uint8_t>(); }
  absl::StatusOr<std::string> Line() {
    size_t nl = data_.find('\n', pos_);
    if (nl == absl::string_view::npos) return Bad("unterminated line");
    std::string out(data_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return out;
  }

  absl::StatusOr<ValuePtr> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) {
      return Bad("stack underflow");
    }
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  ValuePtr Make(Kind kind) {
    auto v = std::make_shared<Value>();
    v->kind = kind;
    if (kind == Kind::kTuple || kind == Kind::kList || kind == Kind::kDict) containers_.push_back(v);
    return v;
  }
  absl::StatusOr<std::vector<ValuePtr>> PopToMark() {
    if (marks_.empty()) return Bad("missing MARK");
    size_t mark = marks_.back();
    marks_.pop_back();
    if (mark > stack_.size()) return Bad("stack underflow");
    std::vector<ValuePtr> out(std::make_move_iterator(stack_.begin() + mark),
                              std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return out;
  }
  absl::StatusOr<ValuePtr> Top() {
    if (stack_.empty()) return Bad("stack underflow");
    return stack_.back();
  }
  void Push(ValuePtr v) { stack_.push_back(std::move(v)); }
  void PushString(absl::string_view s) {
    auto v = Make(Kind::kString);
    v->s = std::string(s);
    Push(std::move(v));
  }
  void PushInt(int64_t i) {
    auto v = Make(Kind::kInt);
    v->i = i;
    Push(std::move(v));
  }
  absl::Status Memo(int64_t key) {
    ASSIGN_OR_RETURN(ValuePtr top, Top());
    memo_[key] = top;
    return absl::OkStatus();
  }
  absl::Status Get(int64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Bad("memo key not found");
    Push(it->second);
    return absl::OkStatus();
  }
  absl::Status SetItems(std::vector<ValuePtr> kv) {
    if (kv.size() % 2 != 0) return Bad("odd number of dict items");
    ASSIGN_OR_RETURN(ValuePtr dict, Top());
    if (dict->kind != Kind::kDict) return Bad("SETITEMS on a non-dict");
    for (size_t i = 0; i < kv.size(); i += 2) dict->entries.emplace_back(kv[i], kv[i + 1]);
    return absl::OkStatus();
  }
  absl::Status Appends(std::vector<ValuePtr> values) {
    ASSIGN_OR_RETURN(ValuePtr list, Top());
    if (list->kind != Kind::kList) return Bad("APPENDS on a non-list");
    for (auto& v : values) list->items.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::Status PushTuple(std::vector<ValuePtr> items) {
    auto t = Make(Kind::kTuple);
    t->items = std::move(items);
    Push(std::move(t));
    return absl::OkStatus();
  }
  absl::Status TupleN(size_t n) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + n) return Bad("stack underflow");
    std::vector<ValuePtr> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return PushTuple(std::move(items));
  }

  static absl::StatusOr<std::vector<int64_t>> IntTuple(const ValuePtr& v) {
    if (v->kind != Kind::kTuple) return Bad("tensor size/stride is not a tuple");
    if (v->items.size() > kMaxTensorRank) return Bad("tensor of more than 64 dimensions");
    std::vector<int64_t> out;
    for (auto& item : v->items) {
      if (item->kind != Kind::kInt) return Bad("tensor size/stride holds a non-integer");
      out.push_back(item->i);
    }
    return out;
  }

  // Applies an allow-listed global to its argument tuple.
  absl::StatusOr<ValuePtr> Call(const ValuePtr& fn, const ValuePtr& args) {
    if (fn->kind != Kind::kGlobal || args->kind != Kind::kTuple) return Bad("bad REDUCE");
    const auto& a = args->items;
    if (fn->s == "collections.OrderedDict") {
      if (!a.empty()) return Bad("OrderedDict with arguments");
      return Make(Kind::kDict);
    }
    if (fn->s == "torch._utils._rebuild_parameter") {
      if (a.empty() || a[0]->kind != Kind::kTensor) return Bad("bad _rebuild_parameter");
      return a[0];
    }
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    //                    backward_hooks[, metadata])
    if (a.size() < 4 || a[0]->kind != Kind::kStorage || a[1]->kind != Kind::kInt) {
      return Bad("bad _rebuild_tensor_v2 arguments");
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> size, IntTuple(a[2]));
    ASSIGN_OR_RETURN(std::vector<int64_t> stride, IntTuple(a[3]));
    const torch::Tensor& storage = a[0]->tensor;
    const int64_t offset = a[1]->i;
    if (size.size() != stride.size()) return Bad("tensor size and stride differ in rank");
    // The furthest element the view touches must lie inside the storage.
    int64_t last = offset;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0) return Bad("negative tensor size or stride");
      if (size[d] == 0) { last = -1; break; }
      int64_t reach = 0;
      if (__builtin_mul_overflow(size[d] - 1, stride[d], &reach) ||
          __builtin_add_overflow(last, reach, &last)) {
        return Bad("tensor view outside its storage");
      }
    }
    if (offset < 0 || last >= storage.numel()) return Bad("tensor view outside its storage");
    auto out = Make(Kind::kTensor);
    ASSIGN_OR_RETURN(out->tensor, CallTorch("rebuilding tensor", [&] {
                       return storage.as_strided(size, stride, offset);
                     }));
    return out;
  }

  absl::Status PersistentLoad(const ValuePtr& pid) {
    // ('storage', storage_type, key, location, numel)
    if (pid->kind != Kind::kTuple || pid->items.size() < 5 ||
        pid->items[0]->kind != Kind::kString || pid->items[0]->s != "storage" ||
        pid->items[1]->kind != Kind::kGlobal || pid->items[2]->kind != Kind::kString ||
        pid->items[4]->kind != Kind::kInt) {
      return Bad("unsupported persistent id");
    }
    const std::string& key = pid->items[2]->s;
    auto cached = storages_.find(key);
    if (cached == storages_.end()) {
      auto type = StorageTypes().find(pid->items[1]->s);
      if (type == StorageTypes().end()) return Bad("unknown storage type");
      auto v = Make(Kind::kStorage);
      ASSIGN_OR_RETURN(v->tensor, loader_(key, type->second, pid->items[4]->i));
      cached = storages_.emplace(key, std::move(v)).first;
    }
    Push(cached->second);
    return absl::OkStatus();
  }

  absl::Status Step(uint8_t op) {
    switch (op) {
      case 0x80: return U8().status();                       // PROTO
      case 0x95: return Bytes(8).status();                   // FRAME
      case '.': done_ = true; return absl::OkStatus();       // STOP
      case '(': marks_.push_back(stack_.size()); return absl::OkStatus();  // MARK
      case 'N': Push(Make(Kind::kNone)); return absl::OkStatus();
      case 0x88: case 0x89: {                                // NEWTRUE / NEWFALSE
        auto v = Make(Kind::kBool);
        v->b = op == 0x88;
        Push(std::move(v));
        return absl::OkStatus();
      }
      case 'K': { ASSIGN_OR_RETURN(uint8_t v, U8()); PushInt(v); return absl::OkStatus(); }
      case 'M': { ASSIGN_OR_RETURN(uint16_t v, Le<uint16_t>()); PushInt(v); return absl::OkStatus(); }
      case 'J': { ASSIGN_OR_RETURN(int32_t v, Le<int32_t>()); PushInt(v); return absl::OkStatus(); }
      case 0x8a: {                                           // LONG1
        ASSIGN_OR_RETURN(uint8_t n, U8());
        if (n > 8) return Bad("integer wider than 64 bits");
        ASSIGN_OR_RETURN(absl::string_view b, Bytes(n));
        uint64_t u = 0;
        for (size_t k = 0; k < n; ++k) u |= uint64_t{static_cast<uint8_t>(b[k])} << (8 * k);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
        PushInt(static_cast<int64_t>(u));
        return absl::OkStatus();
      }
      case 'G': {                                            // BINFLOAT, big-endian
        ASSIGN_OR_RETURN(absl::string_view b, Bytes(8));
        uint64_t u = 0;
        for (char c : b) u = (u << 8) | static_cast<uint8_t>(c);
        auto v = Make(Kind::kFloat);
        std::memcpy(&v->f, &u, 8);
        Push(std::move(v));
        return absl::OkStatus();
      }
      case 'X': case 'T': case 'B': {                        // BINUNICODE / BINSTRING / BINBYTES
        ASSIGN_OR_RETURN(uint32_t n, Le<uint32_t>());
        ASSIGN_OR_RETURN(absl::string_view s, Bytes(n));
        PushString(s);
        return absl::OkStatus();
      }
      case 0x8c: case 'U': case 'C': {                       // SHORT_BINUNICODE / _BINSTRING / _BINBYTES
        ASSIGN_OR_RETURN(uint8_t n, U8());
        ASSIGN_OR_RETURN(absl::string_view s, Bytes(n));
        PushString(s);
        return absl::OkStatus();
      }
      case 0x8d: {                                           // BINUNICODE8
        ASSIGN_OR_RETURN(uint64_t n, Le<uint64_t>());
        ASSIGN_OR_RETURN(absl::string_view s, Bytes(n));
        PushString(s);
        return absl::OkStatus();
      }
      case '}': Push(Make(Kind::kDict)); return absl::OkStatus();
      case ']': Push(Make(Kind::kList)); return absl::OkStatus();
      case ')': return PushTuple({});
      case 0x85: return TupleN(1);
      case 0x86: return TupleN(2);
      case 0x87: return TupleN(3);
      case 't': { ASSIGN_OR_RETURN(auto items, PopToMark()); return PushTuple(std::move(items)); }
      case 'l': {                                            // LIST
        ASSIGN_OR_RETURN(auto items, PopToMark());
        auto v = Make(Kind::kList);
        v->items = std::move(items);
        Push(std::move(v));
        return absl::OkStatus();
      }
      case 'q': { ASSIGN_OR_RETURN(uint8_t k, U8()); return Memo(k); }
      case 'r': { ASSIGN_OR_RETURN(uint32_t k, Le<uint32_t>()); return Memo(k); }
      case 0x94: return Memo(static_cast<int64_t>(memo_.size()));  // MEMOIZE
      case 'h': { ASSIGN_OR_RETURN(uint8_t k, U8()); return Get(k); }
      case 'j': { ASSIGN_OR_RETURN(uint32_t k, Le<uint32_t>()); return Get(k); }
      case 's': {                                            // SETITEM
        ASSIGN_OR_RETURN(ValuePtr v, Pop());
        ASSIGN_OR_RETURN(ValuePtr k, Pop());
        return SetItems({k, v});
      }
      case 'u': { ASSIGN_OR_RETURN(auto kv, PopToMark()); return SetItems(std::move(kv)); }
      case 'a': { ASSIGN_OR_RETURN(ValuePtr v, Pop()); return Appends({v}); }
      case 'e': { ASSIGN_OR_RETURN(auto vs, PopToMark()); return Appends(std::move(vs)); }
      case 'c': {                                            // GLOBAL module\nname\n
        ASSIGN_OR_RETURN(std::string module, Line());
        ASSIGN_OR_RETURN(std::string name, Line());
        auto v = Make(Kind::kGlobal);
        v->s = absl::StrCat(module, ".", name);
        if (!IsAllowedGlobal(v->s)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "refusing to load: the file references the Python global '", v->s,
              "', which a weights-only state_dict never needs (save model.state_dict(), "
              "not the model object)"));
        }
        Push(std::move(v));
        return absl::OkStatus();
      }
      case 'R': {                                            // REDUCE
        ASSIGN_OR_RETURN(ValuePtr args, Pop());
        ASSIGN_OR_RETURN(ValuePtr fn, Pop());
        ASSIGN_OR_RETURN(ValuePtr out, Call(fn, args));
        Push(std::move(out));
        return absl::OkStatus();
      }
      case 'b': {                                            // BUILD: state of an OrderedDict (_metadata)
        RETURN_IF_ERROR(Pop().status());
        return Top().status();
      }
      case 'Q': {                                            // BINPERSID
        ASSIGN_OR_RETURN(ValuePtr pid, Pop());
        return PersistentLoad(pid);
      }
      default:
        return Bad(absl::StrCat("unsupported pickle opcode 0x", absl::Hex(op)));
    }
  }

  absl::string_view data_;
  const StorageLoader& loader_;
  size_t pos_ = 0;
  bool done_ = false;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<int64_t, ValuePtr> memo_;
  std::unordered_map<std::string, ValuePtr> storages_;
  std::vector<ValuePtr> containers_;
};

}  // namespace

Unpickled::~Unpickled() { BreakLinks(containers_); }

absl::StatusOr<Unpickled> Unpickle(absl::string_view data, const StorageLoader& load_storage) {
  return Machine(data, load_storage).Run();
}

}  // namespace kennel::core::pickle
