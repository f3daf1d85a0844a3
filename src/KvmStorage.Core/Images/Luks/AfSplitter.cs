using System.Buffers.Binary;
using System.Security.Cryptography;

namespace KvmStorage.Core.Images.Luks;

/// <summary>
/// LUKS's anti-forensic splitter (the LUKS1 on-disk format specification, "AF-Splitter"): a key is stored as
/// <c>stripes</c> blocks, all but the last random, the last the key XORed with the diffusion of the others, so that
/// losing any one block of the stored material loses the key.
/// </summary>
internal static class AfSplitter
{
    /// <summary>Splits <paramref name="key"/> into <paramref name="stripes"/> blocks of its length, written to <paramref name="split"/>.</summary>
    public static void Split(HashAlgorithmName hash, ReadOnlySpan<byte> key, int stripes, Span<byte> split)
    {
        int n = key.Length;
        RandomNumberGenerator.Fill(split[..((stripes - 1) * n)]);
        Span<byte> d = stackalloc byte[n];
        Fold(hash, split, n, stripes, d);
        Span<byte> last = split.Slice((stripes - 1) * n, n);
        for (int i = 0; i < n; i++)
        {
            last[i] = (byte)(d[i] ^ key[i]);
        }

        CryptographicOperations.ZeroMemory(d);
    }

    /// <summary>Recovers the key of <paramref name="key"/>'s length from its <paramref name="stripes"/> split blocks.</summary>
    public static void Merge(HashAlgorithmName hash, ReadOnlySpan<byte> split, int stripes, Span<byte> key)
    {
        int n = key.Length;
        Span<byte> d = stackalloc byte[n];
        Fold(hash, split, n, stripes, d);
        ReadOnlySpan<byte> last = split.Slice((stripes - 1) * n, n);
        for (int i = 0; i < n; i++)
        {
            key[i] = (byte)(d[i] ^ last[i]);
        }

        CryptographicOperations.ZeroMemory(d);
    }

    // d = 0; for each of the first stripes-1 blocks: d = diffuse(d ^ block).
    private static void Fold(HashAlgorithmName hash, ReadOnlySpan<byte> split, int n, int stripes, Span<byte> d)
    {
        d.Clear();
        for (int s = 0; s < stripes - 1; s++)
        {
            ReadOnlySpan<byte> block = split.Slice(s * n, n);
            for (int i = 0; i < n; i++)
            {
                d[i] ^= block[i];
            }

            Diffuse(hash, d);
        }
    }

    // Each digest-sized piece becomes H(be32(index) || piece), the last piece's hash cut to the piece's length.
    private static void Diffuse(HashAlgorithmName hash, Span<byte> d)
    {
        int digest = LuksHash.DigestLength(hash);
        Span<byte> input = stackalloc byte[4 + digest];
        Span<byte> output = stackalloc byte[digest];
        int pieces = (d.Length + digest - 1) / digest;
        for (int p = 0; p < pieces; p++)
        {
            int start = p * digest;
            int length = Math.Min(digest, d.Length - start);
            BinaryPrimitives.WriteUInt32BigEndian(input, (uint)p);
            d.Slice(start, length).CopyTo(input[4..]);
            LuksHash.Hash(hash, input[..(4 + length)], output);
            output[..length].CopyTo(d.Slice(start, length));
        }
    }
}

/// <summary>The hash functions LUKS names in its header (hash-spec), as the runtime provides them.</summary>
internal static class LuksHash
{
    public static bool TryParse(string spec, out HashAlgorithmName hash)
    {
        hash = spec switch
        {
            "sha1" => HashAlgorithmName.SHA1,
            "sha256" => HashAlgorithmName.SHA256,
            "sha384" => HashAlgorithmName.SHA384,
            "sha512" => HashAlgorithmName.SHA512,
            _ => default,
        };
        return hash.Name is not null;
    }

    public static string Name(HashAlgorithmName hash) => hash.Name!.ToLowerInvariant();

    public static int DigestLength(HashAlgorithmName hash) => hash.Name switch
    {
        "SHA1" => 20,
        "SHA256" => 32,
        "SHA384" => 48,
        _ => 64,
    };

    public static void Hash(HashAlgorithmName hash, ReadOnlySpan<byte> input, Span<byte> output)
    {
        int written = hash.Name switch
        {
#pragma warning disable CA5350 // LUKS headers made with hash-spec sha1 (cryptsetup's old default) must still open.
            "SHA1" => SHA1.HashData(input, output),
#pragma warning restore CA5350
            "SHA256" => SHA256.HashData(input, output),
            "SHA384" => SHA384.HashData(input, output),
            _ => SHA512.HashData(input, output),
        };
        System.Diagnostics.Debug.Assert(written == DigestLength(hash), "digest length");
    }
}
