using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace KvmStorage.Core.Images.Luks;

/// <summary>
/// AES-XTS (IEEE 1619) over 512-byte sectors with plain64 tweaks, as LUKS1 and dm-crypt use it: the tweak of a
/// sector is its 64-bit number, little-endian, zero-padded to 16 bytes, encrypted with the second half of the key.
/// Built from the runtime's AES in ECB mode (hardware AES where the CPU has it), many sectors per call: the tweaks of
/// a whole buffer are computed first, so the block cipher runs over the buffer in one pass. Sectors are whole, so
/// XTS's ciphertext stealing never applies. Instances are safe to use from several threads at once.
/// </summary>
internal sealed class XtsAes : IDisposable
{
    public const int SectorSize = 512;
    private const int BlocksPerSector = SectorSize / 16;

    // Buffers bigger than this are processed in slices, so the tweak buffer stays small.
    private const int SliceBytes = 256 * 1024;

    private readonly Aes data;
    private readonly Aes tweak;

    /// <summary>Takes a 32-, 48- or 64-byte key: the data key then the tweak key, each half of it.</summary>
    public XtsAes(ReadOnlySpan<byte> key)
    {
        if (key.Length is not (32 or 48 or 64))
        {
            throw new ArgumentException("An XTS key is two AES keys: 32, 48 or 64 bytes.", nameof(key));
        }

        int half = key.Length / 2;
        data = Aes.Create();
        data.Key = key[..half].ToArray();
        tweak = Aes.Create();
        tweak.Key = key[half..].ToArray();
    }

    /// <summary>Encrypts whole sectors in place; the first is sector <paramref name="firstSector"/>.</summary>
    public void Encrypt(Span<byte> buffer, ulong firstSector) => Transform(buffer, firstSector, encrypt: true);

    /// <summary>Decrypts whole sectors in place; the first is sector <paramref name="firstSector"/>.</summary>
    public void Decrypt(Span<byte> buffer, ulong firstSector) => Transform(buffer, firstSector, encrypt: false);

    public void Dispose()
    {
        data.Dispose();
        tweak.Dispose();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Transform(Span<byte> buffer, ulong firstSector, bool encrypt)
    {
        if (buffer.Length % SectorSize != 0)
        {
            throw new ArgumentException("XTS works on whole 512-byte sectors.", nameof(buffer));
        }

        int sliceLength = Math.Min(buffer.Length, SliceBytes);
        byte[] tweaks = ArrayPool<byte>.Shared.Rent(sliceLength);
        try
        {
            ulong sector = firstSector;
            for (int at = 0; at < buffer.Length; at += SliceBytes)
            {
                Span<byte> slice = buffer.Slice(at, Math.Min(SliceBytes, buffer.Length - at));
                Span<byte> t = tweaks.AsSpan(0, slice.Length);
                FillTweaks(t, sector);
                Xor(slice, t);
                if (encrypt)
                {
                    data.EncryptEcb(slice, slice, PaddingMode.None);
                }
                else
                {
                    data.DecryptEcb(slice, slice, PaddingMode.None);
                }

                Xor(slice, t);
                sector += (ulong)(slice.Length / SectorSize);
            }
        }
        finally
        {
            // The tweaks are not secret, but they say which sectors were touched; clear them all the same.
            CryptographicOperations.ZeroMemory(tweaks.AsSpan(0, sliceLength));
            ArrayPool<byte>.Shared.Return(tweaks);
        }
    }

    /// <summary>Every block's tweak: the first of a sector is E(K2, plain64), each next one is the last times x in GF(2^128).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void FillTweaks(Span<byte> tweaks, ulong firstSector)
    {
        int sectors = tweaks.Length / SectorSize;

        // The plain64 IVs of all sectors, packed, encrypted in one call, then spread to each sector's first block.
        Span<byte> ivs = tweaks[..(sectors * 16)];
        ivs.Clear();
        for (int s = 0; s < sectors; s++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(ivs[(s * 16)..], firstSector + (ulong)s);
        }

        tweak.EncryptEcb(ivs, ivs, PaddingMode.None);
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(tweaks);
        const int WordsPerSector = SectorSize / 8;

        // Backwards, so no sector's first block overwrites an IV not yet moved.
        for (int s = sectors - 1; s >= 0; s--)
        {
            ulong lo = words[s * 2];
            ulong hi = words[(s * 2) + 1];
            if (!BitConverter.IsLittleEndian)
            {
                lo = BinaryPrimitives.ReverseEndianness(lo);
                hi = BinaryPrimitives.ReverseEndianness(hi);
            }

            int w = s * WordsPerSector;
            for (int b = 0; b < BlocksPerSector; b++)
            {
                words[w + (b * 2)] = BitConverter.IsLittleEndian ? lo : BinaryPrimitives.ReverseEndianness(lo);
                words[w + (b * 2) + 1] = BitConverter.IsLittleEndian ? hi : BinaryPrimitives.ReverseEndianness(hi);

                // Multiply by x: shift the 128-bit little-endian value left, fold the carry with 0x87.
                ulong carry = hi >> 63;
                hi = (hi << 1) | (lo >> 63);
                lo = (lo << 1) ^ (carry * 0x87);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Xor(Span<byte> target, ReadOnlySpan<byte> with)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            Span<Vector<byte>> tv = MemoryMarshal.Cast<byte, Vector<byte>>(target);
            ReadOnlySpan<Vector<byte>> wv = MemoryMarshal.Cast<byte, Vector<byte>>(with);
            for (int v = 0; v < tv.Length; v++)
            {
                tv[v] ^= wv[v];
            }

            i = tv.Length * Vector<byte>.Count;
        }

        for (; i < target.Length; i++)
        {
            target[i] ^= with[i];
        }
    }
}
