// copy_document: copies every field of a nested.Document into another, using only the generated
// accessors: a tour of the API for each field kind (scalars, optional, strings, bytes, nested,
// repeated scalars/strings/messages, oneof, maps, recursion). The nested_server echoes with it.
#pragma once

#include "nested.mrpc.h"

namespace nested {

void copy_point(const Point::View& from, Point to);
void copy_tree(const Tree::View& from, Tree to);
void copy_document(const Document::View& from, Document to);

}  // namespace nested
