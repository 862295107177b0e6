// util/interrupt.h: the guard's handlers run on an alternate signal stack
// that lives and goes with the outermost guard; a first signal is recorded,
// the handlers before the guard come back after it.
#include <gtest/gtest.h>

#include "cellstate/util/interrupt.h"

#include <csignal>
#include <cstdint>

#include <signal.h>

namespace cs = cellstate;

namespace {

stack_t current_signal_stack() {
  stack_t s{};
  EXPECT_EQ(sigaltstack(nullptr, &s), 0);
  return s;
}

struct sigaction current_action(int signo) {
  struct sigaction sa {};
  EXPECT_EQ(sigaction(signo, nullptr, &sa), 0);
  return sa;
}

// Where the last SIGUSR1 handler's frame was (a local's address).
volatile uintptr_t g_handler_frame = 0;

extern "C" void note_frame(int) {
  volatile char local = 0;
  g_handler_frame = reinterpret_cast<uintptr_t>(&local);
}

}  // namespace

TEST(InterruptGuard, HandlersRunOnAnAlternateStackThatGoesWithTheOutermostGuard) {
  ASSERT_TRUE(current_signal_stack().ss_flags & SS_DISABLE) << "the test thread has an alternate stack already";
  const auto int_before = current_action(SIGINT);
  {
    cs::InterruptGuard guard;
    const stack_t stack = current_signal_stack();
    ASSERT_FALSE(stack.ss_flags & SS_DISABLE) << "the guard gave its thread no alternate signal stack";
    EXPECT_GE(stack.ss_size, cs::SignalStack::kBytes);
    for (int s : {SIGINT, SIGTERM}) {
      const auto sa = current_action(s);
      EXPECT_TRUE(sa.sa_flags & SA_ONSTACK) << "signal " << s << " is not handled on the alternate stack";
      EXPECT_FALSE(sa.sa_flags & SA_RESETHAND);
      EXPECT_NE(sa.sa_handler, SIG_DFL);
      EXPECT_NE(sa.sa_handler, SIG_IGN);
    }
    {
      cs::InterruptGuard inner;  // nested: changes nothing
      EXPECT_EQ(current_signal_stack().ss_sp, stack.ss_sp);
    }
    EXPECT_EQ(current_signal_stack().ss_sp, stack.ss_sp) << "an inner guard took the stack away";
    EXPECT_FALSE(guard.requested());
    std::raise(SIGINT);
    EXPECT_TRUE(guard.requested());
    EXPECT_EQ(guard.signal(), SIGINT);
    EXPECT_THROW(guard.check(), cs::Interrupted);
  }
  EXPECT_TRUE(current_signal_stack().ss_flags & SS_DISABLE) << "the alternate stack outlived the guard";
  EXPECT_EQ(current_action(SIGINT).sa_handler, int_before.sa_handler) << "the SIGINT handler was not restored";
  cs::InterruptGuard again;  // a fresh outermost guard starts with no signal
  EXPECT_FALSE(again.requested());
}

TEST(SignalStack, InstalledHandlersRunOnItAndAThreadsOwnStackIsKept) {
  struct sigaction previous {};
  {
    cs::SignalStack stack;
    ASSERT_TRUE(stack.installed());
    const stack_t s = current_signal_stack();
    const auto begin = reinterpret_cast<uintptr_t>(s.ss_sp);
    cs::install_signal_handler(SIGUSR1, note_frame, &previous);
    g_handler_frame = 0;
    std::raise(SIGUSR1);
    EXPECT_GE(g_handler_frame, begin);
    EXPECT_LT(g_handler_frame, begin + s.ss_size) << "the handler ran on the interrupted stack";
    {
      cs::SignalStack second;  // the thread has one: kept, and kept after this one goes
      EXPECT_FALSE(second.installed());
    }
    EXPECT_EQ(current_signal_stack().ss_sp, s.ss_sp);
    sigaction(SIGUSR1, &previous, nullptr);
  }
  EXPECT_TRUE(current_signal_stack().ss_flags & SS_DISABLE);
}
