// Compile-fail cases: messages received from the daemon, and every view nested in one, are
// read-only types. tests/message/CMakeLists.txt compiles this file once per CASE and expects each
// case but 0 to fail with the error it names; CASE 0 (reads, and writes to a built message) must
// compile, so the failures are not a broken include path.
#include <utility>

#include "echo.mrpc.h"
#include "nested.mrpc.h"

void uses(mrpc::ShmHeap& heap, const mrpc::Received<nested::Document>& received,
          const nested::Document::View& request, mrpc::CallResult<echo::EchoReply>& reply) {
#if CASE == 0
  (void)received->title();
  (void)received->origin().x();
  (void)received->sections(0).anchor().y();
  (void)request.counts_at("a");
  (void)reply->text();
  auto built = nested::Document::create(heap);
  built.set_title("x");
  built.mutable_origin().set_x(1);
  built.add_sections().set_title("s");
  (void)built.CopyFrom(*received);
  nested::Document view_of_built = built;  // a view of an owned message is fine
  (void)view_of_built;
#elif CASE == 1  // setter on a received message
  received->set_title("x");
#elif CASE == 2  // setter on a sub-message of a received message
  received->origin().set_x(1);
#elif CASE == 3  // setter on an element of a repeated field of a received message
  received->sections(0).set_title("x");
#elif CASE == 4  // mutable accessor on the request a handler gets
  request.mutable_origin();
#elif CASE == 5  // setter through a call's result
  reply->set_text("x");
#elif CASE == 6  // a received view turned into a mutable message
  nested::Document writable = *received;
  (void)writable;
#elif CASE == 7  // slicing the owner away (the message would be freed under the view)
  nested::Document sliced = nested::Document::create(heap);
  (void)sliced;
#endif
  (void)heap;
  (void)received;
  (void)request;
  (void)reply;
}
