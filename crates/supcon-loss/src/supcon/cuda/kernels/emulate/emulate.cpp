// Runs a launch schedule of the supcon CUDA kernels on the CPU (see cuda_shim.h).
//
//   emulate PLAN
//
// PLAN, one directive per line (written by tests/cuda_emulated.rs from `plan::schedule`):
//   buffer ID BYTES [FILE]        a zeroed buffer, or FILE's bytes
//   launch ENTRY GX GY GZ BX BY BZ ARGS...   each arg: p ID OFFSET | i VALUE | f VALUE
//   out ID FILE                   write the buffer's bytes to FILE
#include "cuda_shim.h"

#define SUPCON_EMULATED 1
#include "../supcon_rows.cu"
#include "../supcon_tiles.cu"

#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

struct Arg {
    char kind;
    long long id, offset;
    int i;
    float f;
};

static std::map<long long, std::vector<char>> buffers;

struct Args {
    std::vector<Arg> a;
    void* ptr(size_t k) const {
        const Arg& x = a.at(k);
        if (x.kind != 'p') throw std::runtime_error("argument is not a pointer");
        std::vector<char>& b = buffers.at(x.id);
        if (x.offset < 0 || (size_t)x.offset > b.size()) throw std::runtime_error("offset");
        return b.data() + x.offset;
    }
    float* pf(size_t k) const { return (float*)ptr(k); }
    int* pi(size_t k) const { return (int*)ptr(k); }
    double* pd(size_t k) const { return (double*)ptr(k); }
    int i(size_t k) const {
        if (a.at(k).kind != 'i') throw std::runtime_error("argument is not an int");
        return a.at(k).i;
    }
    float f(size_t k) const {
        if (a.at(k).kind != 'f') throw std::runtime_error("argument is not a float");
        return a.at(k).f;
    }
};

using Entry = std::function<void(const Args&)>;

static std::map<std::string, std::pair<size_t, Entry>> entries() {
    std::map<std::string, std::pair<size_t, Entry>> e;
    e["supcon_gather_rows"] = {7, [](const Args& a) {
        supcon_gather_rows(a.pf(0), a.i(1), a.i(2), a.i(3), a.i(4), a.pf(5), a.pf(6));
    }};
    e["supcon_class_sums"] = {9, [](const Args& a) {
        supcon_class_sums(a.pf(0), a.i(1), a.pi(2), a.pi(3), a.i(4), a.pi(5), a.i(6), a.f(7),
                          a.pf(8));
    }};
    e["supcon_sum_terms"] = {3, [](const Args& a) { supcon_sum_terms(a.pf(0), a.i(1), a.pd(2)); }};
    e["supcon_finalize_grad"] = {16, [](const Args& a) {
        supcon_finalize_grad(a.pf(0), a.pf(1), a.pf(2), a.pf(3), a.pf(4), a.pf(5), a.pi(6),
                             a.pi(7), a.i(8), a.i(9), a.i(10), a.i(11), a.f(12), a.i(13), a.i(14),
                             a.pf(15));
    }};
#define FORWARD(name)                                                                          \
    e[#name] = {12, [](const Args& a) {                                                        \
        name(a.pf(0), a.pi(1), a.pi(2), a.pf(3), a.i(4), a.i(5), a.i(6), a.f(7), a.i(8),        \
             a.pf(9), a.pf(10), a.pf(11));                                                     \
    }};
    FORWARD(supcon_forward_f32)
    FORWARD(supcon_forward_tf32)
#define GRAD_ANCHOR(name)                                                                      \
    e[#name] = {11, [](const Args& a) {                                                        \
        name(a.pf(0), a.pi(1), a.pf(2), a.pf(3), a.pf(4), a.i(5), a.i(6), a.i(7), a.f(8),       \
             a.i(9), a.pf(10));                                                                \
    }};
    GRAD_ANCHOR(supcon_grad_anchor_f32)
    GRAD_ANCHOR(supcon_grad_anchor_tf32)
#define GRAD_CONTRAST(name)                                                                    \
    e[#name] = {12, [](const Args& a) {                                                        \
        name(a.pf(0), a.pi(1), a.pf(2), a.pf(3), a.pf(4), a.i(5), a.i(6), a.i(7), a.i(8),       \
             a.f(9), a.i(10), a.pf(11));                                                       \
    }};
    GRAD_CONTRAST(supcon_grad_contrast_f32)
    GRAD_CONTRAST(supcon_grad_contrast_tf32)
    return e;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: emulate PLAN\n";
        return 2;
    }
    const auto table = entries();
    std::ifstream plan(argv[1]);
    std::string line;
    try {
        while (std::getline(plan, line)) {
            std::istringstream in(line);
            std::string op;
            if (!(in >> op)) continue;
            if (op == "buffer") {
                long long id;
                size_t bytes;
                std::string file;
                in >> id >> bytes;
                std::vector<char> b(bytes, 0);
                if (in >> file) {
                    std::ifstream f(file, std::ios::binary);
                    f.read(b.data(), (std::streamsize)bytes);
                    if ((size_t)f.gcount() != bytes) throw std::runtime_error("short file " + file);
                }
                buffers[id] = std::move(b);
            } else if (op == "launch") {
                std::string name;
                EmuDim3 grid, block;
                in >> name >> grid.x >> grid.y >> grid.z >> block.x >> block.y >> block.z;
                Args args;
                std::string kind;
                while (in >> kind) {
                    Arg x{kind[0], 0, 0, 0, 0.0f};
                    if (kind == "p") in >> x.id >> x.offset;
                    else if (kind == "i") in >> x.i;
                    else if (kind == "f") in >> x.f;
                    else throw std::runtime_error("bad argument kind " + kind);
                    args.a.push_back(x);
                }
                const auto it = table.find(name);
                if (it == table.end()) throw std::runtime_error("unknown entry " + name);
                if (it->second.first != args.a.size())
                    throw std::runtime_error(name + ": wrong argument count");
                const Entry& fn = it->second.second;
                emu::launch(grid, block, [&] { fn(args); });
            } else if (op == "out") {
                long long id;
                std::string file;
                in >> id >> file;
                std::ofstream f(file, std::ios::binary);
                const std::vector<char>& b = buffers.at(id);
                f.write(b.data(), (std::streamsize)b.size());
            } else {
                throw std::runtime_error("bad directive " + op);
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "emulate: " << e.what() << " (line: " << line << ")\n";
        return 1;
    }
    return 0;
}
