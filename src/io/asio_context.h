// Opaque access to the event loop's Boost.Asio io_context, for modules that own Asio objects on the loop
// (the http module's sockets, the uring backend's eventfd). Everything else uses event_loop::post().
#pragma once

#include <boost/asio/io_context.hpp>

#include "io/event_loop.h"

namespace deltasync::io {

// The io_context run by loop's thread. Objects bound to it must be used on that thread only.
boost::asio::io_context& asio_context(event_loop& loop) noexcept;

}  // namespace deltasync::io
