// MrpcGenerator: the code it writes is described in docs/message-layout.md (layout) and in
// include/mrpc/message/generated_support.h (what the accessors call). Every offset in the
// generated code comes from mrpc::LayoutSet, the same computation the daemon runs at run time.
#include "generator.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "mrpc/message/layout.h"

namespace mrpc::tools {
namespace {

namespace pb = google::protobuf;
using Vars = std::map<std::string, std::string>;

// Replaces every $name$ in `text` by vars[name] (protobuf's Printer convention).
std::string subst(std::string_view text, const Vars& vars) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t open = text.find('$', i);
    if (open == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    const size_t close = text.find('$', open + 1);
    out.append(text.substr(i, open - i));
    const std::string key(text.substr(open + 1, close - open - 1));
    auto it = vars.find(key);
    if (it == vars.end()) throw std::runtime_error("protoc-gen-mrpc: no variable " + key);
    out.append(it->second);
    i = close + 1;
  }
  return out;
}

std::string strip_proto(const std::string& name) {
  return name.size() > 6 && name.ends_with(".proto") ? name.substr(0, name.size() - 6) : name;
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// The accessor name of a field or oneof: its lower-case name, with "_" appended when that is a
// C++ keyword or a member every generated class has (protobuf's rule, plus ours).
std::string accessor_name(const std::string& name) {
  static const std::set<std::string> kReserved = {
      "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break",
      "case", "catch", "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept",
      "const", "consteval", "constexpr", "constinit", "const_cast", "continue", "co_await",
      "co_return", "co_yield", "decltype", "default", "delete", "do", "double", "dynamic_cast",
      "else", "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto",
      "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq",
      "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register",
      "reinterpret_cast", "requires", "return", "short", "signed", "sizeof", "static",
      "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local",
      "throw", "true", "try", "typedef", "typeid", "typename", "union", "unsigned", "using",
      "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq",
      // members of every generated message class
      "ref", "create", "mrpc_ref_", "mrpc_self", "mrpc_anchor", "mrpc_anchor_", "mrpc_maps_"};
  std::string lowered = lower(name);
  return kReserved.count(lowered) != 0 ? lowered + "_" : lowered;
}

std::string camel(const std::string& snake) {
  std::string out;
  bool next_upper = true;
  for (char c : snake) {
    if (c == '_') {
      next_upper = true;
      continue;
    }
    out += next_upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    next_upper = false;
  }
  return out;
}

// The `namespace=NAME` parameter (mrpc_generate's NAMESPACE): a namespace under every package's
// namespace that the generated classes go in, so that protoc's C++ classes of the same .proto
// (in the package's namespace) can be linked into the same program. Empty: the package's
// namespace itself. Set by Generate for the file it generates (protoc runs a plugin
// single-threaded, one file at a time); imported files' classes are referred to under the same
// sub-namespace, so every .proto of a program is generated with the same option.
std::string g_sub_namespace;

// One C++ identifier (protoc's parameter syntax has no room for "::"), or an error.
std::string check_namespace_option(const std::string& value) {
  const bool valid = !value.empty() &&
                     (std::isalpha(static_cast<unsigned char>(value[0])) != 0 || value[0] == '_') &&
                     std::all_of(value.begin(), value.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
                     });
  if (valid) return "";
  return fmt::format(
      "namespace=\"{}\": not a C++ identifier (one name, such as shm; it goes under the "
      "package's namespace)",
      value);
}

std::string cpp_namespace(const pb::FileDescriptor& file) {
  std::string ns;
  std::string package = file.package();
  size_t start = 0;
  while (start <= package.size() && !package.empty()) {
    const size_t dot = package.find('.', start);
    ns += "::" + package.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (!g_sub_namespace.empty()) ns += "::" + g_sub_namespace;
  return ns;
}

// "pkg.Outer.Inner" -> "Outer_Inner"
template <class D>
std::string local_name(const D& descriptor) {
  const std::string& package = descriptor.file()->package();
  std::string name = descriptor.full_name();
  if (!package.empty()) name = name.substr(package.size() + 1);
  for (char& c : name)
    if (c == '.') c = '_';
  return name;
}

template <class D>
std::string qualified(const D& descriptor) {
  return cpp_namespace(*descriptor.file()) + "::" + local_name(descriptor);
}

// Bytes as a C++ string literal body, octal escapes for anything not plainly printable.
std::string escape(std::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\' && c != '?') {
      out += c;
    } else {
      out += fmt::format("\\{:03o}", u);
    }
  }
  return out;
}

const char* storage_type(FieldKind kind) {
  switch (kind) {
    case FieldKind::kBool:
      return "uint8_t";
    case FieldKind::kInt32:
    case FieldKind::kEnum:
      return "int32_t";
    case FieldKind::kUint32:
      return "uint32_t";
    case FieldKind::kInt64:
      return "int64_t";
    case FieldKind::kUint64:
      return "uint64_t";
    case FieldKind::kFloat:
      return "float";
    case FieldKind::kDouble:
      return "double";
    case FieldKind::kString:
    case FieldKind::kBytes:
    case FieldKind::kMessage:
      return "::mrpc::RegionRef";
  }
  return "?";
}

// The C++ type a getter returns (and a setter takes) for one value of `field`.
std::string value_type(const pb::FieldDescriptor& field, FieldKind kind) {
  switch (kind) {
    case FieldKind::kBool:
      return "bool";
    case FieldKind::kEnum:
      return qualified(*field.enum_type());
    case FieldKind::kString:
    case FieldKind::kBytes:
      return "std::string_view";
    case FieldKind::kMessage:
      return qualified(*field.message_type());
    default:
      return storage_type(kind);
  }
}

template <class T>
std::string float_literal(T value, const char* type) {
  if (std::isnan(value)) return fmt::format("std::numeric_limits<{}>::quiet_NaN()", type);
  if (std::isinf(value))
    return fmt::format("{}std::numeric_limits<{}>::infinity()", value < 0 ? "-" : "", type);
  return fmt::format("{}({:.17g})", type, static_cast<double>(value));
}

// The value a getter returns when the field is not set: protobuf's default.
std::string default_value(const pb::FieldDescriptor& field, FieldKind kind) {
  switch (field.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return fmt::format(
          "int32_t({}{})", field.default_value_int32() == INT32_MIN ? "-2147483647 - 1" : "",
          field.default_value_int32() == INT32_MIN ? ""
                                                   : std::to_string(field.default_value_int32()));
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return field.default_value_int64() == INT64_MIN
                 ? "int64_t(-9223372036854775807LL - 1)"
                 : fmt::format("int64_t({}LL)", field.default_value_int64());
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return fmt::format("uint32_t({}u)", field.default_value_uint32());
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return fmt::format("uint64_t({}ULL)", field.default_value_uint64());
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return float_literal(field.default_value_float(), "float");
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return float_literal(field.default_value_double(), "double");
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return field.default_value_bool() ? "true" : "false";
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return fmt::format("static_cast<{}>({})", value_type(field, kind),
                         field.default_value_enum()->number());
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      const std::string& text = field.default_value_string();
      return fmt::format("std::string_view(\"{}\", {})", escape(text), text.size());
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return value_type(field, kind) + "(::mrpc::MessageRef{})";
  }
  return "{}";
}

// ---------------------------------------------------------------------------------------------

class FileGenerator {
 public:
  FileGenerator(const pb::FileDescriptor& file) : file_(file) {
    for_each_message([&](const pb::Descriptor& d) { layouts_.add(d); });
  }

  std::string header() {
    std::string out = fmt::format(
        "// Generated by protoc-gen-mrpc from {}. Do not edit.\n"
        "// Message classes are views over shared memory (docs/message-layout.md).\n"
        "#pragma once\n\n"
        "#include <cstdint>\n#include <functional>\n#include <future>\n#include <limits>\n"
        "#include <memory>\n#include <string_view>\n#include <vector>\n\n"
        "#include \"mrpc/message/generated_support.h\"\n",
        file_.name());
    for (int i = 0; i < file_.dependency_count(); ++i)
      out += fmt::format("#include \"{}.mrpc.h\"\n", strip_proto(file_.dependency(i)->name()));
    out += "\n";
    out += open_namespace();
    out += fmt::format(
        "// The serialized FileDescriptorSet of {} and its imports.\nstd::string_view {}();\n\n",
        file_.name(), descriptor_set_function());
    for_each_message([&](const pb::Descriptor& d) { out += "class " + local_name(d) + ";\n"; });
    out += "namespace mrpc_views {\n";
    for_each_message([&](const pb::Descriptor& d) { out += "class " + local_name(d) + ";\n"; });
    out += "}  // namespace mrpc_views\n\n";
    for (int i = 0; i < file_.enum_type_count(); ++i) out += enum_decl(*file_.enum_type(i));
    for_each_message([&](const pb::Descriptor& d) {
      for (int i = 0; i < d.enum_type_count(); ++i) out += enum_decl(*d.enum_type(i));
    });
    for_each_message([&](const pb::Descriptor& d) { out += message_decl(d); });
    for_each_message([&](const pb::Descriptor& d) { out += message_defs(d); });
    for (int i = 0; i < file_.service_count(); ++i) out += service_decl(*file_.service(i));
    out += close_namespace();
    return out;
  }

  std::string source() {
    std::string out = fmt::format(
        "// Generated by protoc-gen-mrpc from {}. Do not edit.\n#include \"{}.mrpc.h\"\n\n",
        file_.name(), strip_proto(file_.name()));
    out += open_namespace();
    const std::string set = descriptor_set();
    out += fmt::format("namespace {{\nconstexpr char kDescriptorSetBytes[] =\n");
    for (size_t i = 0; i < set.size(); i += 64)
      out += "    \"" + escape(std::string_view(set).substr(i, 64)) + "\"\n";
    if (set.empty()) out += "    \"\"\n";
    out += fmt::format(
        ";\n}}  // namespace\n\nstd::string_view {}() {{\n  return "
        "std::string_view(kDescriptorSetBytes, {});\n}}\n\n",
        descriptor_set_function(), set.size());
    for (int i = 0; i < file_.service_count(); ++i) out += service_defs(*file_.service(i));
    out += close_namespace();
    return out;
  }

 private:
  template <class F>
  void for_each_message(F&& f) {
    std::function<void(const pb::Descriptor&)> visit = [&](const pb::Descriptor& d) {
      f(d);
      for (int i = 0; i < d.nested_type_count(); ++i) visit(*d.nested_type(i));
    };
    for (int i = 0; i < file_.message_type_count(); ++i) visit(*file_.message_type(i));
  }

  std::string open_namespace() const {
    std::string ns = cpp_namespace(file_);
    return ns.empty() ? "" : "namespace " + ns.substr(2) + " {\n\n";
  }
  std::string close_namespace() const {
    std::string ns = cpp_namespace(file_);
    return ns.empty() ? "" : "}  // namespace " + ns.substr(2) + "\n";
  }

  std::string descriptor_set_function() const {
    std::string name = "file_descriptor_set_" + strip_proto(file_.name());
    for (char& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return name;
  }

  std::string descriptor_set() const {
    pb::FileDescriptorSet set;
    std::set<const pb::FileDescriptor*> done;
    std::function<void(const pb::FileDescriptor&)> add = [&](const pb::FileDescriptor& f) {
      if (!done.insert(&f).second) return;
      for (int i = 0; i < f.dependency_count(); ++i) add(*f.dependency(i));
      f.CopyTo(set.add_file());
    };
    add(file_);
    std::string bytes;
    set.SerializeToString(&bytes);
    return bytes;
  }

  std::string enum_decl(const pb::EnumDescriptor& e) {
    const std::string name = local_name(e);
    const bool nested = e.containing_type() != nullptr;
    std::string out = fmt::format("enum {} : int32_t {{\n", name);
    for (int i = 0; i < e.value_count(); ++i) {
      const pb::EnumValueDescriptor& v = *e.value(i);
      out += fmt::format("  {}{} = {},\n", nested ? name + "_" : "", v.name(), v.number());
    }
    return out + "};\n\n";
  }

  // Two classes per message: mrpc_views::C, read-only (getters only; what received messages and
  // every getter of a sub-message give), and C, a mutable view deriving from it (setters, adds,
  // CopyFrom/MergeFrom; what create(), mutable_x() and add_x() give).
  std::string message_decl(const pb::Descriptor& d) {
    const MessageLayout& layout = *layouts_.find(d.full_name());
    Vars v{{"C", local_name(d)},
           {"full", d.full_name()},
           {"size", std::to_string(layout.body_size())},
           {"fp", fmt::format("0x{:016x}ULL", layout.fingerprint())}};
    std::string out = subst(R"(namespace mrpc_views {
// $full$, read-only: a view of a message that cannot change it (received messages, and every
// getter of a sub-message). Copyable; owns nothing.
class $C$ {
 public:
  static constexpr std::string_view kFullName = "$full$";
  static constexpr uint32_t kBodySize = $size$;
  static constexpr uint64_t kLayoutFingerprint = $fp$;

  explicit $C$(::mrpc::MessageRef ref) : mrpc_ref_(ref) {}
  $C$(::mrpc::MessageRef ref, std::shared_ptr<const ::mrpc::gen::ElementAnchor> anchor)
      : mrpc_ref_(ref), mrpc_anchor_(std::move(anchor)) {}
  // Where the message is now (an element of a repeated field is found again on each access, as
  // growing the field moves it).
  ::mrpc::MessageRef ref() const { return mrpc_self(); }

)",
                            v);
    for (int i = 0; i < d.enum_type_count(); ++i) {
      const pb::EnumDescriptor& e = *d.enum_type(i);
      out += fmt::format("  using {} = {};\n", e.name(), local_name(e));
      for (int k = 0; k < e.value_count(); ++k)
        out += fmt::format("  static constexpr {} {} = {}_{};\n", e.name(), e.value(k)->name(),
                           local_name(e), e.value(k)->name());
    }
    std::string mutable_oneofs;
    for (const OneofLayout& oneof : layout.oneofs()) {
      out += fmt::format("  enum {}Case : uint32_t {{\n", camel(oneof.name));
      for (uint32_t index : oneof.fields) {
        const FieldLayout& f = layout.fields()[index];
        out += fmt::format("    k{} = {},\n", camel(f.name), f.number);
      }
      out += fmt::format("    {}_NOT_SET = 0,\n  }};\n", upper(oneof.name));
      out +=
          fmt::format("  {}Case {}_case() const;\n", camel(oneof.name), accessor_name(oneof.name));
      mutable_oneofs += fmt::format("  void clear_{}();\n", accessor_name(oneof.name));
    }
    out += "\n";
    std::string mutable_fields;
    for (int i = 0; i < d.field_count(); ++i) {
      const FieldLayout& f = layout.fields()[static_cast<size_t>(i)];
      out += field_decls(*d.field(i), layout, f, /*view=*/true);
      mutable_fields += field_decls(*d.field(i), layout, f, /*view=*/false);
    }
    bool has_map = false;
    for (const FieldLayout& f : layout.fields()) has_map |= f.is_map;
    out += R"(
 protected:
  ::mrpc::MessageRef mrpc_self() const {
    return mrpc_anchor_ ? ::mrpc::gen::resolve(*mrpc_anchor_) : mrpc_ref_;
  }
  const std::shared_ptr<const ::mrpc::gen::ElementAnchor>& mrpc_anchor() const { return mrpc_anchor_; }

 private:
  ::mrpc::MessageRef mrpc_ref_;
  std::shared_ptr<const ::mrpc::gen::ElementAnchor> mrpc_anchor_;
)";
    if (has_map) out += "  mutable std::shared_ptr<::mrpc::gen::MapCache> mrpc_maps_;\n";
    out += "};\n}  // namespace mrpc_views\n\n";
    out += subst(
        R"(// $full$, mutable: a view of a message being built in a heap. Setters, adds and merges return
// whether they wrote: false when the heap is full (the message is then failed, and sending it
// ends with RESOURCE_EXHAUSTED) or the message is not in a heap. Owns nothing; the root a
// create() returns is owned by its mrpc::Owned.
class $C$ : public mrpc_views::$C$ {
 public:
  using View = mrpc_views::$C$;
  using View::View;
  // Slicing the owner away would free the message under this view: keep the mrpc::Owned, or take
  // a view of it (`$C$ view = owned;`).
  $C$(::mrpc::Owned<$C$>&&) = delete;
  // A new, empty message in `heap`, freed when the returned owner is dropped unless it was handed
  // to a stub. If the heap is full the message is failed: writes return false and sending it ends
  // with RESOURCE_EXHAUSTED.
  static ::mrpc::Owned<$C$> create(::mrpc::ShmHeap& heap);

  // Clears every field. CopyFrom: Clear, then MergeFrom. MergeFrom (protobuf's rules): set
  // fields of `from` overwrite, repeated fields append, maps insert-or-assign, sub-messages
  // merge. `from` is any view of the same type (received, or built); deep.
  void Clear();
  bool CopyFrom(const View& from);
  bool MergeFrom(const View& from);

)",
        v);
    for (int i = 0; i < d.nested_type_count(); ++i) {
      out += fmt::format("  using {} = {};\n", d.nested_type(i)->name(),
                         local_name(*d.nested_type(i)));
    }
    out += mutable_oneofs + "\n" + mutable_fields + "};\n\n";
    return out;
  }

  Vars field_vars(const pb::FieldDescriptor& field, const MessageLayout& layout,
                  const FieldLayout& f) {
    Vars v{{"C", local_name(*field.containing_type())},
           {"n", accessor_name(field.name())},
           {"off", std::to_string(f.offset)},
           {"elem", std::to_string(f.element_size)},
           {"num", std::to_string(f.number)},
           {"fname", field.full_name()},
           {"st", storage_type(f.kind)},
           {"T", value_type(field, f.kind)},
           {"default", default_value(field, f.kind)},
           {"mark", ""},
           {"unmark", ""},
           {"has", "true"},
           {"guard", ""},
           {"guard_end", ""}};
    if (f.kind == FieldKind::kMessage) {
      v["sub"] = qualified(*field.message_type());
      v["subv"] = view_name(*field.message_type());
    }
    if (f.presence_bit != kNoPresenceBit) {
      v["bit"] = std::to_string(f.presence_bit);
      v["has"] = subst("::mrpc::gen::has_bit(mrpc_self(), $bit$)", v);
      v["mark"] = subst("::mrpc::gen::set_bit(mrpc_self(), $bit$, true);\n  ", v);
      v["unmark"] = subst("::mrpc::gen::set_bit(mrpc_self(), $bit$, false);\n  ", v);
    } else if (f.oneof_index != kNoOneof) {
      const OneofLayout& o = layout.oneofs()[static_cast<size_t>(f.oneof_index)];
      v["case_off"] = std::to_string(o.case_offset);
      v["stor_off"] = std::to_string(o.storage_offset);
      v["stor_size"] = std::to_string(o.storage_size);
      v["has"] = subst("(::mrpc::gen::get<uint32_t>(mrpc_self(), $case_off$) == $num$)", v);
      v["mark"] = subst(
          "::mrpc::gen::set_case(mrpc_self(), $case_off$, $stor_off$, $stor_size$, $num$);\n  ", v);
    }
    if (v["has"] != "true") {
      // Unset reads as the default, whatever the storage holds.
      v["guard"] = "!" + v["has"] + " ? " + v["default"] + " : ";
      v["guard_end"] = "";
    }
    return v;
  }

  static std::string view_name(const pb::Descriptor& d) {
    return cpp_namespace(*d.file()) + "::mrpc_views::" + local_name(d);
  }

  // Declarations of one field's members: the getters (view) or the writers (mutable class).
  std::string field_decls(const pb::FieldDescriptor& field, const MessageLayout& layout,
                          const FieldLayout& f, bool view) {
    Vars v = field_vars(field, layout, f);
    std::string out = subst("  // $num$: $n$\n", v);
    if (f.repeated) {
      if (view) {
        out += subst("  int $n$_size() const;\n", v);
        out += f.kind == FieldKind::kMessage ? subst("  $subv$ $n$(int index) const;\n", v)
                                             : subst("  $T$ $n$(int index) const;\n", v);
      } else {
        out += subst("  void clear_$n$();\n", v);
        out +=
            f.kind == FieldKind::kMessage
                ? subst("  $sub$ add_$n$();\n  $sub$ mutable_$n$(int index);\n", v)
                : subst("  bool add_$n$($T$ value);\n  bool set_$n$(int index, $T$ value);\n", v);
      }
      if (f.is_map) {
        Vars m = map_vars(field, v);
        if (view) {
          out += subst(
              "  // map: index of the entry of `key` (the last one, as protobuf keeps), or -1. A "
              "hash\n"
              "  // lookup: the index is built on the first lookup through this view object and\n"
              "  // kept up to date as the map grows, so keep the view to keep the index.\n"
              "  int $n$_find($K$ key) const;\n"
              "  bool $n$_contains($K$ key) const { return $n$_find(key) >= 0; }\n"
              "  // the value of `key`, or the default value if absent\n"
              "  $Vv$ $n$_at($K$ key) const;\n",
              m);
        } else if (m["value_is_message"] == "1") {
          out += subst(
              "  // insert-or-assign: the value of `key`, created empty if absent\n"
              "  $V$ insert_$n$($K$ key);\n",
              m);
        } else {
          out += subst("  // insert-or-assign\n  bool insert_$n$($K$ key, $V$ value);\n", m);
        }
      }
      return out;
    }
    if (view) {
      if (f.presence_bit != kNoPresenceBit || f.oneof_index != kNoOneof)
        out += subst("  bool has_$n$() const;\n", v);
      out += f.kind == FieldKind::kMessage ? subst("  $subv$ $n$() const;\n", v)
                                           : subst("  $T$ $n$() const;\n", v);
    } else {
      out += subst("  void clear_$n$();\n", v);
      out += f.kind == FieldKind::kMessage ? subst("  $sub$ mutable_$n$();\n", v)
                                           : subst("  bool set_$n$($T$ value);\n", v);
    }
    return out;
  }

  Vars map_vars(const pb::FieldDescriptor& field, const Vars& v) {
    const pb::FieldDescriptor& key = *field.message_type()->map_key();
    const pb::FieldDescriptor& value = *field.message_type()->map_value();
    Vars m = v;
    m["K"] = value_type(key, kind_of_field(key));
    m["V"] = value_type(value, kind_of_field(value));
    const bool is_message = kind_of_field(value) == FieldKind::kMessage;
    m["value_is_message"] = is_message ? "1" : "0";
    m["Vv"] = is_message ? view_name(*value.message_type()) : m["V"];
    m["Vdefault"] = is_message ? m["Vv"] + "(::mrpc::MessageRef{})"
                               : default_value(value, kind_of_field(value));
    return m;
  }

  static FieldKind kind_of_field(const pb::FieldDescriptor& field) {
    // Same mapping as the layout: read it back from a one-field lookup of the containing layout.
    switch (field.cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        return FieldKind::kBool;
      case pb::FieldDescriptor::CPPTYPE_INT32:
        return FieldKind::kInt32;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        return FieldKind::kUint32;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        return FieldKind::kInt64;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        return FieldKind::kUint64;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        return FieldKind::kFloat;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        return FieldKind::kDouble;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        return FieldKind::kEnum;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        return field.type() == pb::FieldDescriptor::TYPE_BYTES ? FieldKind::kBytes
                                                               : FieldKind::kString;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        return FieldKind::kMessage;
    }
    return FieldKind::kBool;
  }

  // Read/write expressions for one value of a scalar kind.
  static std::string read_scalar(FieldKind kind, const std::string& raw_expression, const Vars& v) {
    if (kind == FieldKind::kBool) return "(" + raw_expression + " != 0)";
    if (kind == FieldKind::kEnum) return subst("static_cast<$T$>(", v) + raw_expression + ")";
    return raw_expression;
  }
  static std::string stored(FieldKind kind) {
    if (kind == FieldKind::kBool) return "static_cast<uint8_t>(value ? 1 : 0)";
    if (kind == FieldKind::kEnum) return "static_cast<int32_t>(value)";
    return "value";
  }

  std::string message_defs(const pb::Descriptor& d) {
    const MessageLayout& layout = *layouts_.find(d.full_name());
    Vars cv{{"C", local_name(d)}};
    std::string out = subst(
        "inline ::mrpc::Owned<$C$> $C$::create(::mrpc::ShmHeap& heap) {\n"
        "  return ::mrpc::gen::create<$C$>(heap);\n}\n",
        cv);
    std::string clear;
    std::string merge;
    for (const OneofLayout& oneof : layout.oneofs()) {
      Vars o{{"C", local_name(d)},
             {"O", camel(oneof.name)},
             {"o", accessor_name(oneof.name)},
             {"case_off", std::to_string(oneof.case_offset)},
             {"stor_off", std::to_string(oneof.storage_offset)},
             {"stor_size", std::to_string(oneof.storage_size)}};
      out += subst(R"(inline mrpc_views::$C$::$O$Case mrpc_views::$C$::$o$_case() const {
  return static_cast<$O$Case>(::mrpc::gen::get<uint32_t>(mrpc_self(), $case_off$));
}
inline void $C$::clear_$o$() { ::mrpc::gen::set_case(mrpc_self(), $case_off$, $stor_off$, $stor_size$, 0); }
)",
                   o);
      clear += subst("  clear_$o$();\n", o);
    }
    for (int i = 0; i < d.field_count(); ++i) {
      const FieldLayout& f = layout.fields()[static_cast<size_t>(i)];
      out += field_defs(*d.field(i), layout, f);
      Vars v = field_vars(*d.field(i), layout, f);
      if (f.oneof_index == kNoOneof) clear += subst("  clear_$n$();\n", v);
      merge += merge_field(*d.field(i), f, v);
    }
    out += subst("inline void $C$::Clear() {\n", cv) + clear + "}\n";
    out += subst(R"(inline bool $C$::CopyFrom(const View& from) {
  const ::mrpc::MessageRef self = mrpc_self(), source = from.ref();
  if (self.base == source.base && self.offset == source.offset) return true;
  Clear();
  return MergeFrom(from);
}
inline bool $C$::MergeFrom(const View& from) {
  bool ok = true;
)",
                 cv);
    out += merge + "  return ok;\n}\n\n";
    return out;
  }

  // MergeFrom's statement for one field (protobuf's merge rules).
  std::string merge_field(const pb::FieldDescriptor& field, const FieldLayout& f, const Vars& v) {
    if (f.is_map) {
      Vars m = map_vars(field, v);
      if (m["value_is_message"] == "1") {
        return subst(
            "  for (int i = 0, count = from.$n$_size(); i < count; ++i)\n"
            "    ok &= insert_$n$(from.$n$(i).key()).CopyFrom(from.$n$(i).value());\n",
            m);
      }
      return subst(
          "  for (int i = 0, count = from.$n$_size(); i < count; ++i)\n"
          "    ok &= insert_$n$(from.$n$(i).key(), from.$n$(i).value());\n",
          m);
    }
    if (f.repeated) {
      if (f.kind == FieldKind::kMessage) {
        return subst(
            "  for (int i = 0, count = from.$n$_size(); i < count; ++i)\n"
            "    ok &= add_$n$().MergeFrom(from.$n$(i));\n",
            v);
      }
      return subst(
          "  for (int i = 0, count = from.$n$_size(); i < count; ++i) ok &= "
          "add_$n$(from.$n$(i));\n",
          v);
    }
    const bool has_presence = f.presence_bit != kNoPresenceBit || f.oneof_index != kNoOneof;
    if (f.kind == FieldKind::kMessage) {
      return has_presence
                 ? subst("  if (from.has_$n$()) ok &= mutable_$n$().MergeFrom(from.$n$());\n", v)
                 : subst("  ok &= mutable_$n$().MergeFrom(from.$n$());\n", v);
    }
    if (has_presence) return subst("  if (from.has_$n$()) ok &= set_$n$(from.$n$());\n", v);
    // proto3 implicit presence: only values that are not zero are merged.
    return subst("  if (::mrpc::gen::nonzero(from.$n$())) ok &= set_$n$(from.$n$());\n", v);
  }

  std::string field_defs(const pb::FieldDescriptor& field, const MessageLayout& layout,
                         const FieldLayout& f) {
    Vars v = field_vars(field, layout, f);
    std::string out;
    if (f.repeated) {
      out += subst(
          R"(inline int mrpc_views::$C$::$n$_size() const { return ::mrpc::gen::repeated_size(mrpc_self(), $off$, $elem$); }
inline void $C$::clear_$n$() { ::mrpc::gen::clear_repeated(mrpc_self(), $off$); }
)",
          v);
      if (f.kind == FieldKind::kMessage) {
        out += subst(R"(inline $subv$ mrpc_views::$C$::$n$(int index) const {
  return ::mrpc::gen::element_view<$subv$>(mrpc_self(), mrpc_anchor(), $off$, $subv$::kBodySize, index);
}
inline $sub$ $C$::add_$n$() {
  const ::mrpc::MessageRef self = mrpc_self();
  const int index = ::mrpc::gen::noted(self, "$fname$", ::mrpc::gen::add_message_index(self, $off$, $sub$::kBodySize));
  return ::mrpc::gen::element_view<$sub$>(self, mrpc_anchor(), $off$, $sub$::kBodySize, index);
}
inline $sub$ $C$::mutable_$n$(int index) {
  return ::mrpc::gen::element_view<$sub$>(mrpc_self(), mrpc_anchor(), $off$, $sub$::kBodySize, index);
}
)",
                     v);
      } else if (f.kind == FieldKind::kString || f.kind == FieldKind::kBytes) {
        out += subst(
            R"(inline std::string_view mrpc_views::$C$::$n$(int index) const { return ::mrpc::gen::get_bytes_element(mrpc_self(), $off$, index); }
inline bool $C$::add_$n$(std::string_view value) {
  const ::mrpc::MessageRef self = mrpc_self();
  return ::mrpc::gen::noted(self, "$fname$", ::mrpc::gen::add_bytes_element(self, $off$, value));
}
inline bool $C$::set_$n$(int index, std::string_view value) {
  const ::mrpc::MessageRef self = mrpc_self();
  return ::mrpc::gen::noted(self, "$fname$", ::mrpc::gen::set_bytes_element(self, $off$, index, value));
}
)",
            v);
      } else {
        Vars s = v;
        s["read"] = read_scalar(
            f.kind, subst("::mrpc::gen::get_element<$st$>(mrpc_self(), $off$, index)", v), v);
        s["value"] = stored(f.kind);
        out += subst(R"(inline $T$ mrpc_views::$C$::$n$(int index) const { return $read$; }
inline bool $C$::add_$n$($T$ value) {
  const ::mrpc::MessageRef self = mrpc_self();
  return ::mrpc::gen::noted(self, "$fname$", ::mrpc::gen::add_element<$st$>(self, $off$, $value$));
}
inline bool $C$::set_$n$(int index, $T$ value) { return ::mrpc::gen::set_element<$st$>(mrpc_self(), $off$, index, $value$); }
)",
                     s);
      }
      if (f.is_map) {
        Vars m = map_vars(field, v);
        out += subst(R"(inline int mrpc_views::$C$::$n$_find($K$ key) const {
  const ::mrpc::MessageRef self = mrpc_self();
  return ::mrpc::gen::map_cache(mrpc_maps_).find(self, $off$, $subv$::kBodySize, key, [&](int i) {
    return $subv$(::mrpc::gen::get_message_element(self, $off$, $subv$::kBodySize, i)).key();
  });
}
inline $Vv$ mrpc_views::$C$::$n$_at($K$ key) const {
  const int i = $n$_find(key);
  return i < 0 ? $Vdefault$ : $n$(i).value();
}
)",
                     m);
        if (m["value_is_message"] == "1") {
          out += subst(R"(inline $V$ $C$::insert_$n$($K$ key) {
  const int i = $n$_find(key);
  $sub$ entry = i >= 0 ? mutable_$n$(i) : add_$n$();
  if (i < 0) entry.set_key(key);
  return entry.mutable_value();
}
)",
                       m);
        } else {
          out += subst(R"(inline bool $C$::insert_$n$($K$ key, $V$ value) {
  const int i = $n$_find(key);
  $sub$ entry = i >= 0 ? mutable_$n$(i) : add_$n$();
  if (i < 0 && !entry.set_key(key)) return false;
  return entry.set_value(value);
}
)",
                       m);
        }
      }
      return out;
    }
    const bool has_presence = f.presence_bit != kNoPresenceBit || f.oneof_index != kNoOneof;
    if (has_presence)
      out += subst("inline bool mrpc_views::$C$::has_$n$() const { return $has$; }\n", v);
    if (f.kind == FieldKind::kMessage) {
      out += subst(R"(inline $subv$ mrpc_views::$C$::$n$() const {
  return $subv$($has$ ? ::mrpc::gen::get_message(mrpc_self(), $off$, $subv$::kBodySize) : ::mrpc::MessageRef{});
}
inline $sub$ $C$::mutable_$n$() {
  const ::mrpc::MessageRef self = mrpc_self();
  $mark$return $sub$(::mrpc::gen::noted(self, "$fname$", ::mrpc::gen::mutable_message(self, $off$, $sub$::kBodySize)));
}
)",
                   v);
    } else if (f.kind == FieldKind::kString || f.kind == FieldKind::kBytes) {
      out += subst(R"(inline std::string_view mrpc_views::$C$::$n$() const {
  return $guard$::mrpc::gen::get_bytes(mrpc_self(), $off$)$guard_end$;
}
inline bool $C$::set_$n$(std::string_view value) {
  const ::mrpc::MessageRef self = mrpc_self();
  $mark$return ::mrpc::gen::noted(self, "$fname$", ::mrpc::gen::set_bytes(self, $off$, value));
}
)",
                   v);
    } else {
      Vars s = v;
      s["read"] = read_scalar(f.kind, subst("::mrpc::gen::get<$st$>(mrpc_self(), $off$)", v), v);
      s["value"] = stored(f.kind);
      out += subst(R"(inline $T$ mrpc_views::$C$::$n$() const { return $guard$$read$$guard_end$; }
inline bool $C$::set_$n$($T$ value) {
  $mark$return ::mrpc::gen::set<$st$>(mrpc_self(), $off$, $value$);
}
)",
                   s);
    }
    if (f.oneof_index != kNoOneof) {
      out += subst(R"(inline void $C$::clear_$n$() {
  if ($has$) ::mrpc::gen::set_case(mrpc_self(), $case_off$, $stor_off$, $stor_size$, 0);
}
)",
                   v);
    } else {
      out += subst(R"(inline void $C$::clear_$n$() {
  $unmark$(void)::mrpc::gen::set<$st$>(mrpc_self(), $off$, $st${});
}
)",
                   v);
    }
    return out;
  }

  std::string service_decl(const pb::ServiceDescriptor& service) {
    Vars v{{"S", service.name()}, {"full", service.full_name()}};
    std::string client_methods;
    std::string server_methods;
    std::string defs;
    for (int i = 0; i < service.method_count(); ++i) {
      const pb::MethodDescriptor& method = *service.method(i);
      Vars m = v;
      m["M"] = method.name();
      m["I"] = qualified(*method.input_type());
      m["O"] = qualified(*method.output_type());
      m["index"] = std::to_string(i);
      client_methods += subst(
          R"(    // The request is moved in: the library owns it from here on and frees it when the daemon
    // is done with it (or at once if it cannot be sent).
    ::mrpc::CallResult<$O$> $M$(::mrpc::Owned<$I$> request, const ::mrpc::CallOptions& options = {});
    ::mrpc::CallId $M$(::mrpc::Owned<$I$> request, const ::mrpc::CallOptions& options,
                       std::function<void(::mrpc::CallResult<$O$>)> done);
    std::future<::mrpc::CallResult<$O$>> $M$Async(::mrpc::Owned<$I$> request, const ::mrpc::CallOptions& options = {});
)",
          m);
      server_methods += subst(
          R"(    virtual ::mrpc::Status $M$(::mrpc::ServerContext& context, const $I$::View& request, $O$& response);
)",
          m);
      defs += subst(
          R"(inline ::mrpc::CallResult<$O$> $S$::Client::$M$(::mrpc::Owned<$I$> request, const ::mrpc::CallOptions& options) {
  return ::mrpc::gen::blocking_call_owned<$O$>(*channel_, schema(), $index$, std::move(request), options);
}
inline ::mrpc::CallId $S$::Client::$M$(::mrpc::Owned<$I$> request, const ::mrpc::CallOptions& options,
                                     std::function<void(::mrpc::CallResult<$O$>)> done) {
  return ::mrpc::gen::start_typed_call<$O$>(*channel_, schema(), $index$, request.release(), options, std::move(done));
}
inline std::future<::mrpc::CallResult<$O$>> $S$::Client::$M$Async(::mrpc::Owned<$I$> request, const ::mrpc::CallOptions& options) {
  return ::mrpc::gen::future_call<$O$>(*channel_, schema(), $index$, request.release(), options);
}
inline ::mrpc::Status $S$::Service::$M$(::mrpc::ServerContext&, const $I$::View&, $O$&) {
  return ::mrpc::Status(::mrpc::StatusCode::kUnimplemented, "$full$.$M$ is not implemented");
}
)",
          m);
    }
    v["client_methods"] = client_methods;
    v["server_methods"] = server_methods;
    v["defs"] = defs;
    std::string handlers;
    for (int i = 0; i < service.method_count(); ++i) {
      const pb::MethodDescriptor& method = *service.method(i);
      Vars m{{"M", method.name()},
             {"I", qualified(*method.input_type())},
             {"O", qualified(*method.output_type())}};
      handlers += subst(R"(  methods.push_back(::mrpc::gen::typed_method<$I$, $O$>(
      [this](::mrpc::ServerContext& context, const $I$::View& request, $O$& response) {
        return $M$(context, request, response);
      }));
)",
                        m);
    }
    v["handlers"] = handlers;
    return subst(R"(// service $full$
class $S$ final {
 public:
  static constexpr std::string_view kFullName = "$full$";
  // What Channel::start_call and Channel::serve take: name, FileDescriptorSet, method names.
  static const ::mrpc::ServiceSchema& schema();

  // Calls $full$ over a channel. Thread-safe (as the channel is).
  class Client {
   public:
    explicit Client(std::shared_ptr<::mrpc::Channel> channel) : channel_(std::move(channel)) {}
$client_methods$
   private:
    std::shared_ptr<::mrpc::Channel> channel_;
  };

  // Serves $full$: override the methods (the defaults answer UNIMPLEMENTED), then
  // channel->serve($S$::schema(), service.methods()). The service must outlive the channel.
  class Service {
   public:
    virtual ~Service() = default;
$server_methods$
    // One UntypedMethod per method, in declaration order.
    std::vector<::mrpc::UntypedMethod> methods();
  };
  using Server = Service;

  $S$() = delete;
};

$defs$inline std::vector<::mrpc::UntypedMethod> $S$::Service::methods() {
  std::vector<::mrpc::UntypedMethod> methods;
$handlers$  return methods;
}

)",
                 v);
  }

  std::string service_defs(const pb::ServiceDescriptor& service) {
    std::string names;
    for (int i = 0; i < service.method_count(); ++i)
      names += fmt::format("\"{}\", ", service.method(i)->name());
    Vars v{{"S", service.name()}, {"names", names}, {"set", descriptor_set_function()}};
    return subst(R"(const ::mrpc::ServiceSchema& $S$::schema() {
  static constexpr std::string_view kMethods[] = {$names$};
  static const ::mrpc::ServiceSchema schema{kFullName, $set$(), kMethods};
  return schema;
}

)",
                 v);
  }

  const pb::FileDescriptor& file_;
  LayoutSet layouts_;
};

}  // namespace

bool MrpcGenerator::Generate(const pb::FileDescriptor* file, const std::string& parameter,
                             pb::compiler::GeneratorContext* context, std::string* error) const {
  std::vector<std::pair<std::string, std::string>> options;
  pb::compiler::ParseGeneratorParameter(parameter, &options);
  g_sub_namespace.clear();
  for (const auto& [key, value] : options) {
    if (key != "namespace") {
      *error = fmt::format("unknown option \"{}\" (protoc-gen-mrpc takes namespace=NAME)", key);
      return false;
    }
    if (std::string bad = check_namespace_option(value); !bad.empty()) {
      *error = bad;
      return false;
    }
    g_sub_namespace = value;
  }
  try {
    FileGenerator generator(*file);
    const std::string base = strip_proto(file->name());
    for (const auto& [name, text] : {std::pair{base + ".mrpc.h", generator.header()},
                                     std::pair{base + ".mrpc.cc", generator.source()}}) {
      std::unique_ptr<pb::io::ZeroCopyOutputStream> stream(context->Open(name));
      void* data = nullptr;
      int size = 0;
      size_t written = 0;
      while (written < text.size()) {
        if (!stream->Next(&data, &size)) {
          *error = "cannot write " + name;
          return false;
        }
        const size_t chunk = std::min(text.size() - written, static_cast<size_t>(size));
        std::memcpy(data, text.data() + written, chunk);
        written += chunk;
        if (chunk < static_cast<size_t>(size)) stream->BackUp(size - static_cast<int>(chunk));
      }
    }
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
  return true;
}

}  // namespace mrpc::tools
