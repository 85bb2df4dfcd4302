// Unit tests of ExactSizeAllocator (pool/asio.h): the blocks of long waits.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "pool/asio.h"

namespace sluice {
namespace {

struct Op72 {
  char bytes[72];
};
struct Op200 {
  char bytes[200];
};
struct Op96 {
  char bytes[96];
};
struct Op40 {
  char bytes[40];
};

// A freed block is reused only for a request of its own size: a long wait never
// holds a block larger than it asked for.
TEST(ExactSizeAllocator, AFreedBlockIsReusedOnlyForItsOwnSize) {
  ExactSizeAllocator<Op72> small;
  ExactSizeAllocator<Op200> large;
  Op200* big = large.allocate(1);
  large.deallocate(big, 1);
  Op72* first = small.allocate(1);
  EXPECT_NE(static_cast<void*>(first), static_cast<void*>(big)) << "a smaller request got the larger block";
  small.deallocate(first, 1);
  Op72* again = small.allocate(1);
  EXPECT_EQ(again, first) << "the freed block of the same size was not reused";
  Op200* big_again = large.allocate(1);
  EXPECT_EQ(big_again, big);
  small.deallocate(again, 1);
  large.deallocate(big_again, 1);
}

// Only a few blocks are kept per thread; the rest go back to the heap. (Sizes no
// other test uses: the thread's blocks outlive a test.)
TEST(ExactSizeAllocator, KeepsAFewBlocksPerThread) {
  auto& blocks = detail::ExactSizeBlocks::of_this_thread();
  const std::size_t before = blocks.kept();
  ExactSizeAllocator<Op96> alloc;
  std::vector<Op96*> live;
  for (std::size_t i = 0; i < blocks.max_kept() + 8; ++i) live.push_back(alloc.allocate(1));
  EXPECT_EQ(std::set<Op96*>(live.begin(), live.end()).size(), live.size());
  EXPECT_EQ(blocks.kept(), before) << "a block of another size was handed out";
  for (auto* block : live) alloc.deallocate(block, 1);
  EXPECT_EQ(blocks.kept(), blocks.max_kept());
  Op96* one = alloc.allocate(1);
  EXPECT_EQ(blocks.kept(), blocks.max_kept() - 1);
  ExactSizeAllocator<Op40> other;
  Op40* different = other.allocate(1);
  EXPECT_EQ(blocks.kept(), blocks.max_kept() - 1) << "a block of another size was handed out";
  other.deallocate(different, 1);
  alloc.deallocate(one, 1);
  EXPECT_EQ(blocks.kept(), blocks.max_kept());
}

}  // namespace
}  // namespace sluice
