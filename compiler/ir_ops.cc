// The run-time meaning of operators and pure builtins (ir_ops.h). The defined results of faults
// are documented in docs/mpol-design.md, "Run-time faults"; a change here changes the language.
#include "ir_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "mrpc/base/limits.h"
#include "sha256.h"

namespace mrpc::compiler::ir {

namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

int64_t wrap_add(int64_t a, int64_t b, bool& fault) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fault = true;
  return r;
}
int64_t wrap_sub(int64_t a, int64_t b, bool& fault) {
  int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r)) fault = true;
  return r;
}
int64_t wrap_mul(int64_t a, int64_t b, bool& fault) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fault = true;
  return r;
}
// Integer division with eBPF's defined results: x / 0 == 0, x % 0 == x, MIN / -1 == MIN,
// MIN % -1 == 0.
int64_t int_div(int64_t a, int64_t b, bool& fault) {
  if (b == 0) {
    fault = true;
    return 0;
  }
  if (a == kMin && b == -1) {
    fault = true;
    return kMin;
  }
  return a / b;
}
int64_t int_rem(int64_t a, int64_t b, bool& fault) {
  if (b == 0) {
    fault = true;
    return a;
  }
  if (a == kMin && b == -1) {
    fault = true;
    return 0;
  }
  return a % b;
}
// A double to int64: truncation toward zero, NaN to 0, out of range to the nearest end.
int64_t to_int64(double d, bool& fault) {
  if (std::isnan(d)) {
    fault = true;
    return 0;
  }
  if (d >= 9223372036854775807.0) {
    fault = fault || d > 9223372036854775807.0;
    return kMax;
  }
  if (d < -9223372036854775808.0) {
    fault = true;
    return kMin;
  }
  return static_cast<int64_t>(d);
}

int compare(const Value& a, const Value& b) {
  switch (a.kind) {
    case Kind::kFloat:
      return a.f < b.f ? -1 : (a.f > b.f ? 1 : 0);
    case Kind::kString:
    case Kind::kBytes:
      return a.s.compare(b.s) < 0 ? -1 : (a.s == b.s ? 0 : 1);
    default:
      return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
  }
}

double number(const Value& v) {
  return v.kind == Kind::kFloat ? v.f : static_cast<double>(v.i);
}

uint64_t fnv1a(uint64_t h, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// Stable across runs and hosts: FNV-1a 64 over the value's kind and its bytes.
int64_t stable_hash(const Value& v) {
  uint64_t h = 0xcbf29ce484222325ull;
  uint8_t kind = static_cast<uint8_t>(v.kind);
  h = fnv1a(h, &kind, 1);
  if (v.kind == Kind::kString || v.kind == Kind::kBytes) {
    h = fnv1a(h, v.s.data(), v.s.size());
  } else if (v.kind == Kind::kFloat) {
    h = fnv1a(h, &v.f, sizeof v.f);
  } else {
    h = fnv1a(h, &v.i, sizeof v.i);
  }
  return static_cast<int64_t>(h);
}

// Lamping and Veach's jump consistent hash.
int64_t jump_hash(uint64_t key, int64_t buckets) {
  int64_t b = -1, j = 0;
  while (j < buckets) {
    b = j;
    key = key * 2862933555777941757ull + 1;
    j = static_cast<int64_t>(static_cast<double>(b + 1) * (static_cast<double>(1ll << 31) /
                                                           static_cast<double>((key >> 33) + 1)));
  }
  return b;
}

}  // namespace

int64_t saturating_add(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kMax : kMin;
  return r;
}

int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return (a < 0) == (b < 0) ? kMax : kMin;
  return r;
}

bool string_too_long(const Value& v) {
  return (v.kind == Kind::kString || v.kind == Kind::kBytes) &&
         v.s.size() > limits::kMaxPolicyStringBytes;
}

Value apply_unary(Op op, const Value& a, bool& fault) {
  Value r = a;
  if (op == Op::kNot) {
    r.i = a.i != 0 ? 0 : 1;
    return r;
  }
  if (a.kind == Kind::kFloat) {
    r.f = -a.f;
  } else if (a.kind == Kind::kDuration) {
    // Durations saturate: -MIN is MAX.
    if (a.i == kMin) fault = true;
    r.i = a.i == kMin ? kMax : -a.i;
  } else {
    r.i = wrap_sub(0, a.i, fault);
  }
  return r;
}

Value apply_binary(Op op, const Value& a, const Value& b, Kind result, bool& fault) {
  switch (op) {
    case Op::kEq:
      return Value::of_bool(a == b);
    case Op::kNe:
      return Value::of_bool(!(a == b));
    case Op::kLt:
      return Value::of_bool(compare(a, b) < 0);
    case Op::kLe:
      return Value::of_bool(compare(a, b) <= 0);
    case Op::kGt:
      return Value::of_bool(compare(a, b) > 0);
    case Op::kGe:
      return Value::of_bool(compare(a, b) >= 0);
    default:
      break;
  }
  Value r;
  r.kind = result;
  if (result == Kind::kString) {
    r.s = a.s + b.s;
    if (string_too_long(r)) fault = true;
    return r;
  }
  if (result == Kind::kFloat) {
    switch (op) {
      case Op::kAdd:
        r.f = a.f + b.f;
        break;
      case Op::kSub:
        r.f = a.f - b.f;
        break;
      case Op::kMul:
        r.f = a.f * b.f;
        break;
      case Op::kDiv:
        // IEEE 754: x / 0.0 is an infinity (NaN for 0 / 0); flagged, not changed.
        if (b.f == 0) fault = true;
        r.f = a.f / b.f;
        break;
      case Op::kRem:
        // C's fmod: the sign of the dividend; x % 0.0 is NaN (flagged).
        if (b.f == 0) fault = true;
        r.f = std::fmod(a.f, b.f);
        break;
      default:
        break;
    }
    return r;
  }
  if (result == Kind::kInt) {
    switch (op) {
      case Op::kAdd:
        r.i = wrap_add(a.i, b.i, fault);
        break;
      case Op::kSub:
        r.i = wrap_sub(a.i, b.i, fault);
        break;
      case Op::kMul:
        r.i = wrap_mul(a.i, b.i, fault);
        break;
      case Op::kDiv:
        r.i = int_div(a.i, b.i, fault);
        break;
      case Op::kRem:
        r.i = int_rem(a.i, b.i, fault);
        break;
      default:
        break;
    }
    return r;
  }
  // Durations and times: nanoseconds that saturate at the int64 ends.
  auto saturate_add = [&](int64_t x, int64_t y) {
    int64_t s = 0;
    if (__builtin_add_overflow(x, y, &s)) fault = true;
    return saturating_add(x, y);
  };
  switch (op) {
    case Op::kAdd:
      r.i = saturate_add(a.i, b.i);
      break;
    case Op::kSub:
      if (b.i == kMin) {
        fault = true;
        r.i = saturate_add(saturate_add(a.i, kMax), 1);
      } else {
        r.i = saturate_add(a.i, -b.i);
      }
      break;
    case Op::kMul: {
      const Value& d = a.kind == Kind::kDuration ? a : b;
      const Value& n = a.kind == Kind::kDuration ? b : a;
      if (n.kind == Kind::kFloat) {
        r.i = to_int64(static_cast<double>(d.i) * n.f, fault);
      } else {
        int64_t p = 0;
        if (__builtin_mul_overflow(d.i, n.i, &p)) fault = true;
        r.i = saturating_mul(d.i, n.i);
      }
      break;
    }
    case Op::kDiv:
      r.i = int_div(a.i, b.i, fault);
      break;
    default:
      break;
  }
  return r;
}

bool contains_value(const Value& container, const Value& x) {
  size_t step = container.kind == Kind::kMap ? 2 : 1;
  for (size_t i = 0; i < container.items.size(); i += step) {
    if (container.items[i] == x) return true;
  }
  return false;
}

Value apply_builtin(Builtin builtin, std::span<const Value> args, Kind result, bool& fault) {
  Value r;
  r.kind = result;
  switch (builtin) {
    case Builtin::kHash:
      r.i = stable_hash(args[0]);
      return r;
    case Builtin::kMin:
      return compare(args[1], args[0]) < 0 ? args[1] : args[0];
    case Builtin::kMax:
      return compare(args[1], args[0]) > 0 ? args[1] : args[0];
    case Builtin::kAbs:
      r = args[0];
      if (r.kind == Kind::kFloat) {
        r.f = std::fabs(r.f);
      } else if (r.i == kMin) {
        fault = true;
        r.i = kMax;  // abs(MIN) saturates
      } else {
        r.i = r.i < 0 ? -r.i : r.i;
      }
      return r;
    case Builtin::kLen: {
      const Value& a = args[0];
      if (a.kind == Kind::kString || a.kind == Kind::kBytes) {
        r.i = static_cast<int64_t>(a.s.size());
      } else {
        r.i = static_cast<int64_t>(a.kind == Kind::kMap ? a.items.size() / 2 : a.items.size());
      }
      return r;
    }
    case Builtin::kSeconds:
      r.f = static_cast<double>(args[0].i) / 1e9;
      return r;
    case Builtin::kFromSeconds:
      r.i = to_int64(number(args[0]) * 1e9, fault);
      return r;
    case Builtin::kInt: {
      const Value& a = args[0];
      if (a.kind == Kind::kFloat) {
        r.i = to_int64(a.f, fault);
      } else if (a.kind == Kind::kString) {
        // Strict decimal: an optional sign and digits, nothing else; anything else is 0.
        const std::string& s = a.s;
        size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
        bool ok = i < s.size() && s.size() <= 32;
        for (size_t j = i; ok && j < s.size(); ++j) ok = s[j] >= '0' && s[j] <= '9';
        if (!ok) {
          fault = true;
          r.i = 0;
        } else {
          errno = 0;
          long long v = std::strtoll(s.c_str(), nullptr, 10);
          if (errno == ERANGE) fault = true;
          r.i = v;
        }
      } else {
        r.i = a.i;
      }
      return r;
    }
    case Builtin::kFloat: {
      const Value& a = args[0];
      if (a.kind == Kind::kFloat) {
        r.f = a.f;
      } else if (a.kind == Kind::kString) {
        char* end = nullptr;
        const std::string& s = a.s;
        bool ok = !s.empty() && s.size() <= 64 &&
                  s.find_first_not_of("0123456789+-.eE") == std::string::npos;
        double v = ok ? std::strtod(s.c_str(), &end) : 0;
        if (!ok || end != s.c_str() + s.size()) {
          fault = true;
          v = 0;
        }
        r.f = v;
      } else {
        r.f = static_cast<double>(a.i);
      }
      return r;
    }
    case Builtin::kStr: {
      const Value& a = args[0];
      switch (a.kind) {
        case Kind::kString:
        case Kind::kBytes:
          r.s = a.s;
          break;
        case Kind::kInt:
        case Kind::kTime:
          r.s = std::to_string(a.i);
          break;
        default:
          r.s = value_text(a);
          break;
      }
      return r;
    }
    case Builtin::kLower:
    case Builtin::kUpper:
      r.s = args[0].s;
      for (char& c : r.s) {
        if (builtin == Builtin::kLower && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        if (builtin == Builtin::kUpper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
      }
      return r;
    case Builtin::kStartsWith:
      r.i = args[0].s.starts_with(args[1].s);
      return r;
    case Builtin::kEndsWith:
      r.i = args[0].s.ends_with(args[1].s);
      return r;
    case Builtin::kContains:
      r.i = args[0].s.find(args[1].s) != std::string::npos;
      return r;
    case Builtin::kSubstr: {
      // Byte offsets, clamped to the string: never a fault.
      const std::string& s = args[0].s;
      int64_t size = static_cast<int64_t>(s.size());
      int64_t start = std::clamp<int64_t>(args[1].i, 0, size);
      int64_t len = std::clamp<int64_t>(args[2].i, 0, size - start);
      r.s = s.substr(static_cast<size_t>(start), static_cast<size_t>(len));
      return r;
    }
    case Builtin::kSha256:
      r.s = sha256_hex(args[0].s);
      return r;
    case Builtin::kConsistentHash: {
      const Value& list = args[1];
      if (list.items.empty()) {
        Type t = Type::of(result);
        return Value::zero(t);
      }
      int64_t n = static_cast<int64_t>(list.items.size());
      return list
          .items[static_cast<size_t>(jump_hash(static_cast<uint64_t>(stable_hash(args[0])), n))];
    }
    case Builtin::kNow:
    case Builtin::kRandom:
    case Builtin::kHas:
      break;
  }
  return r;
}

}  // namespace mrpc::compiler::ir
