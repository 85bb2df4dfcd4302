// Unit tests of ExactSizeAllocator and its per-thread blocks (pool/asio.h): the
// memory of long waits.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "pool/asio.h"

namespace sluice {
namespace {

using detail::ExactSizeBlocks;

// A freed block is given out again only for its own size: a long wait never holds
// a block larger than it asked for.
TEST(ExactSizeBlocks, AKeptBlockIsGivenOutOnlyForItsOwnSize) {
  ExactSizeBlocks blocks;
  void* large = blocks.take(200);
  blocks.give(large, 200);
  EXPECT_EQ(blocks.kept(), 1u);
  void* small = blocks.take(72);
  EXPECT_NE(small, large) << "a smaller request got the larger block";
  EXPECT_EQ(blocks.kept(), 1u);
  EXPECT_EQ(blocks.take(200), large);
  EXPECT_EQ(blocks.kept(), 0u);
  blocks.give(small, 72);
  blocks.give(large, 200);  // the destructor frees them (LeakSanitizer checks)
}

// At most kMaxKept blocks; when full, a freed block replaces a kept one, so blocks
// of sizes no longer asked for do not stay for ever.
TEST(ExactSizeBlocks, KeepsAFewAndReplacesOldOnesWhenFull) {
  ExactSizeBlocks blocks;
  std::vector<void*> old_size, new_size;
  for (std::size_t i = 0; i < ExactSizeBlocks::kMaxKept + 4; ++i) old_size.push_back(blocks.take(96));
  for (void* block : old_size) blocks.give(block, 96);
  EXPECT_EQ(blocks.kept(), ExactSizeBlocks::kMaxKept);
  for (std::size_t i = 0; i < ExactSizeBlocks::kMaxKept; ++i) new_size.push_back(blocks.take(40));
  EXPECT_EQ(blocks.kept(), ExactSizeBlocks::kMaxKept) << "a block of another size was given out";
  for (void* block : new_size) blocks.give(block, 40);
  EXPECT_EQ(blocks.kept(), ExactSizeBlocks::kMaxKept);
  // Every kept block is now of the new size.
  for (std::size_t i = 0; i < ExactSizeBlocks::kMaxKept; ++i) new_size[i] = blocks.take(40);
  EXPECT_EQ(blocks.kept(), 0u) << "blocks of the old size were still kept";
  for (void* block : new_size) blocks.give(block, 40);
}

struct Op72 {
  char bytes[72];
};

// The allocator keeps what it frees in the thread's blocks and gives it out again
// (a fresh thread: its blocks start empty and are freed when it ends).
TEST(ExactSizeAllocator, ReusesTheBlocksTheThreadFreed) {
  std::thread([] {
    ExactSizeAllocator<Op72> alloc;
    auto* blocks = detail::exact_size_blocks_of_this_thread();
    ASSERT_NE(blocks, nullptr);
    EXPECT_EQ(blocks->kept(), 0u);
    Op72* first = alloc.allocate(1);
    alloc.deallocate(first, 1);
    EXPECT_EQ(blocks->kept(), 1u);
    EXPECT_EQ(alloc.allocate(1), first);
    EXPECT_EQ(blocks->kept(), 0u);
    alloc.deallocate(first, 1);
  }).join();
}

}  // namespace
}  // namespace sluice
