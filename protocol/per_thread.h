#pragma once
// One object of a type per thread, for per-thread caches that other objects' last
// deallocations may reach while the thread exits (after the cache's destructor has
// run): those get null, and fall back to the heap, instead of touching a destroyed
// object.
namespace sluice::protocol {

template <class T>
T* this_thread_object() noexcept {
  // Trivially destructible, so it stays readable after the object is gone.
  static thread_local bool gone = false;
  struct Holder {
    T object;
    ~Holder() { gone = true; }
  };
  if (gone) return nullptr;
  thread_local Holder holder;
  return &holder.object;
}

}  // namespace sluice::protocol
