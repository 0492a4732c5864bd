// Where a sync's file bytes come from: the receiver pipeline consumes read_pieces (file index, offset, bytes in
// a pool buffer) from a piece_source. The disk transport's source is io::chunked_reader (make_disk_file_source in sync/file_source.h);
// the NCCL transport's is nccl_member's broadcast receiver (sync/nccl_member.h). The HTTP pull transport's is
// http::pull_opener's (sync/file_source.h). Everything after the pieces (assembly, decode, apply, verify,
// commit or rollback) is the same for all of them.
//
// Contract (as chunked_reader's): start() and cancel() on the loop thread; on_piece and on_done run there;
// pieces of one file arrive in order, and every read of a file is issued before any read of a later file
// (the receiver applies files in listed order and always takes the first unapplied file's pieces, so a later
// file holding buffers can never stall it); on_done runs once, after the last piece or the first error; cancel()
// delivers no more pieces and ends with on_done(errc::cancelled). The source may be destroyed from inside
// on_done or after it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/chunked_reader.h"
#include "sync/sync_request.h"

namespace deltasync {

class piece_source {
 public:
  virtual ~piece_source() = default;
  virtual void start(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) = 0;
  virtual void cancel() = 0;
};

// A transport other than disk: the receiver asks it for each sync's source. When the receiver refuses a sync
// after the source exists (or fails one midway), it cancels the source, which must still take every announced
// byte off the wire (so the sender's collective completes) while delivering none, then report cancelled.
using transport_source_factory =
    std::function<result<std::unique_ptr<piece_source>>(const sync_request& req, io::buffer_pool& pool)>;

}  // namespace deltasync
