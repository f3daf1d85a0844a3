using System.Security.Cryptography;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Images.Luks;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// LUKS both ways against qemu: images qemu-img encrypts (LUKS files and LUKS in qcow2, several iteration times,
/// hashes and key sizes) read equal to what qemu decrypts; images this module encrypts open in qemu-img and qemu-io
/// with the same passphrase and compare equal to their source; refusals are typed and write nothing.
/// </summary>
public sealed class LuksOracleTests : IDisposable
{
    private const string Secret = "correct horse battery staple";
    private readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    [SkippableTheory]
    [InlineData("luks", "iter-time=10")]
    [InlineData("luks", "iter-time=200")]
    [InlineData("luks", "iter-time=10,hash-alg=sha512")]
    [InlineData("luks", "iter-time=10,hash-alg=sha1")]
    [InlineData("luks", "iter-time=10,cipher-alg=aes-128")]
    [InlineData("qcow2", "encrypt.format=luks,encrypt.iter-time=10")]
    [InlineData("qcow2", "encrypt.format=luks,encrypt.iter-time=150,cluster_size=4096")]
    [InlineData("qcow2", "encrypt.format=luks,encrypt.iter-time=10,encrypt.hash-alg=sha384,cluster_size=2M")]
    public void Images_qemu_encrypts_read_equal_to_what_qemu_decrypts(string format, string options)
    {
        string image = dir.Combine("q." + format);
        string keyOption = format == "luks" ? "key-secret=s0" : "encrypt.key-secret=s0";
        ExternalTool.CreateLuksFixture(image, "create", "-q", "--object", $"secret,id=s0,data={Secret}", "-f", format, "-o", $"{keyOption},{options}", image, "6M");
        string opts = ImageOpts(format, image);
        foreach (string command in new[] { "write -P 0xab 0 65536", "write -P 0x5c 1049088 70000", "write -z 2097152 65536", "write -P 0x11 6225920 65536" })
        {
            ExternalTool.RunChecked("qemu-io", "--object", $"secret,id=s0,data={Secret}", "--image-opts", opts, "-c", command);
        }

        byte[] expected = QemuPlain(format, image);
        using var passphrase = ImagePassphrase.FromChars(Secret);
        using IBlockReader reader = BlockReaders.Open(image, new BlockOpenOptions { Passphrase = passphrase });
        Assert.Equal((ulong)expected.Length, reader.Size);
        byte[] actual = new byte[reader.Size];
        reader.Read(0, actual);
        Assert.True(expected.AsSpan().SequenceEqual(actual), "the module's decryption differs from qemu's");

        // An unaligned read across a sector boundary decrypts the sectors around it.
        byte[] part = new byte[1001];
        reader.Read(1049000, part);
        Assert.True(expected.AsSpan(1049000, 1001).SequenceEqual(part));
    }

    [SkippableTheory]
    [InlineData(ImageFormat.Qcow2, 65536u)]
    [InlineData(ImageFormat.Qcow2, 4096u)]
    [InlineData(ImageFormat.Raw, 65536u)]
    public void Images_the_module_encrypts_open_in_qemu_and_compare_equal(ImageFormat format, uint clusterSize)
    {
        ExternalTool.Require("qemu-img");
        string source = dir.Combine("src.raw");
        byte[] data = new byte[9 * 1024 * 1024 + 4096];
        new Random(7).NextBytes(data.AsSpan(0, 3 * 1024 * 1024));
        data.AsSpan(5 * 1024 * 1024, 777).Fill(0x42);
        new Random(8).NextBytes(data.AsSpan(8 * 1024 * 1024));
        File.WriteAllBytes(source, data);
        string output = dir.Combine(format == ImageFormat.Raw ? "out.luks" : "out.qcow2");
        using var passphrase = ImagePassphrase.FromChars(Secret);
        using (IBlockReader reader = BlockReaders.Open(source))
        {
            ImageConverter.Convert(reader, output, new ConvertOptions
            {
                Format = format,
                ClusterSize = clusterSize,
                Encryption = new ImageEncryption { Passphrase = passphrase, Luks = new LuksCreateOptions { IterationTime = 10 } },
            });
        }

        string qemuFormat = format == ImageFormat.Raw ? "luks" : "qcow2";
        ExternalTool.RunChecked("qemu-img", "compare", "--object", $"secret,id=s0,data={Secret}", "--image-opts", ImageOpts(qemuFormat, output), $"driver=raw,file.filename={source}");
        if (format == ImageFormat.Qcow2)
        {
            ExternalTool.RunChecked("qemu-img", "check", "--object", $"secret,id=s0,data={Secret}", "--image-opts", ImageOpts(qemuFormat, output));
        }

        // No plaintext reaches the file: the random head and the 0x42 run are nowhere in it.
        byte[] stored = File.ReadAllBytes(output);
        Assert.Equal(-1, stored.AsSpan().IndexOf(data.AsSpan(1000, 64)));
        Assert.Equal(-1, stored.AsSpan().IndexOf(data.AsSpan(5 * 1024 * 1024, 64)));

        // And the module reads back what qemu reads.
        using IBlockReader back = BlockReaders.Open(output, new BlockOpenOptions { Passphrase = passphrase });
        byte[] read = new byte[back.Size];
        back.Read(0, read);
        Assert.True(data.AsSpan().SequenceEqual(read.AsSpan(0, data.Length)));
    }

    [SkippableTheory]
    [InlineData(ImageFormat.Qcow2, Preallocation.Off)]
    [InlineData(ImageFormat.Qcow2, Preallocation.Metadata)]
    [InlineData(ImageFormat.Raw, Preallocation.Off)]
    public void Created_images_take_qemu_writes_and_the_module_reads_them(ImageFormat format, Preallocation preallocation)
    {
        ExternalTool.Require("qemu-io");
        string path = dir.Combine(format == ImageFormat.Raw ? "new.luks" : "new.qcow2");
        using var passphrase = ImagePassphrase.FromChars(Secret);
        ImageInfo info = ImageCreator.Create(path, new ImageCreateOptions
        {
            Format = format,
            VirtualSize = 4 * 1024 * 1024,
            Preallocation = preallocation,
            Encryption = new ImageEncryption { Passphrase = passphrase, Luks = new LuksCreateOptions { IterationTime = 10 } },
        });
        Assert.Equal("luks", info.Encryption);
        Assert.Equal(4UL * 1024 * 1024, info.VirtualSize);
        string qemuFormat = format == ImageFormat.Raw ? "luks" : "qcow2";
        string opts = ImageOpts(qemuFormat, path);
        ExternalTool.RunChecked("qemu-io", "--object", $"secret,id=s0,data={Secret}", "--image-opts", opts, "-c", "write -P 0x77 512 100000");
        if (format == ImageFormat.Qcow2)
        {
            ExternalTool.RunChecked("qemu-img", "check", "--object", $"secret,id=s0,data={Secret}", "--image-opts", opts);
        }

        byte[] expected = QemuPlain(qemuFormat, path);
        using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { Passphrase = passphrase });
        byte[] actual = new byte[reader.Size];
        reader.Read(0, actual);
        Assert.True(expected.AsSpan().SequenceEqual(actual));
        Assert.True(actual.AsSpan(512, 100000).IndexOfAnyExcept((byte)0x77) < 0);

        // qemu reports the header the module wrote as its own.
        string json = ExternalTool.RunChecked("qemu-img", "info", "--output=json", path);
        Assert.Contains("\"encrypted\": true", json, StringComparison.Ordinal);
        Assert.Contains("\"cipher-alg\": \"aes-256\"", json, StringComparison.Ordinal);
        Assert.Contains("\"payload-offset\": 2068480", json, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Refusals_are_typed_and_write_nothing()
    {
        string image = dir.Combine("r.luks");
        ExternalTool.CreateLuksFixture(image, "create", "-q", "--object", $"secret,id=s0,data={Secret}", "-f", "luks", "-o", "key-secret=s0,iter-time=10", image, "1M");
        string before = Hash(image);

        using (var wrong = ImagePassphrase.FromChars("not it"))
        {
            var e = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(image, new BlockOpenOptions { Passphrase = wrong }));
            Assert.Equal(LuksErrorIds.WrongPassphrase, e.ErrorId);
            Assert.DoesNotContain("not it", e.Message, StringComparison.Ordinal);
        }

        var missing = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(image));
        Assert.Equal(LuksErrorIds.PassphraseRequired, missing.ErrorId);
        Assert.Equal(before, Hash(image));

        // A damaged key slot header (stripes), then damaged key material: one is a broken header, the other opens no slot.
        using var right = ImagePassphrase.FromChars(Secret);
        string damaged = dir.Combine("d.luks");
        File.Copy(image, damaged);
        Patch(damaged, 208 + 44 + 3, 0x01);
        string damagedBefore = Hash(damaged);
        var header = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(damaged, new BlockOpenOptions { Passphrase = right }));
        Assert.Equal(ForeignFormatErrorIds.LuksHeaderInvalid, header.ErrorId);
        Assert.Equal(damagedBefore, Hash(damaged));

        string material = dir.Combine("m.luks");
        File.Copy(image, material);
        Patch(material, 4096 + 1000, 0xff);
        var slot = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(material, new BlockOpenOptions { Passphrase = right }));
        Assert.Equal(LuksErrorIds.WrongPassphrase, slot.ErrorId);

        // A crafted iteration count that would make opening hang is refused as damage.
        string slow = dir.Combine("s.luks");
        File.Copy(image, slow);
        Patch(slow, 208 + 4, 0x7f);
        var hang = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(slow, new BlockOpenOptions { Passphrase = right }));
        Assert.Equal(ForeignFormatErrorIds.LuksHeaderInvalid, hang.ErrorId);
    }

    [SkippableFact]
    public void An_unsupported_cipher_is_refused_as_such()
    {
        string image = dir.Combine("cbc.luks");
        ExternalTool.CreateLuksFixture(image, "create", "-q", "--object", $"secret,id=s0,data={Secret}", "-f", "luks", "-o", "key-secret=s0,iter-time=10,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256", image, "1M");
        using var right = ImagePassphrase.FromChars(Secret);
        var e = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(image, new BlockOpenOptions { Passphrase = right }));
        Assert.Equal(LuksErrorIds.UnsupportedCipher, e.ErrorId);
        Assert.Equal(ErrorKind.NotSupported, e.Kind);
    }

    [SkippableFact]
    public void Encrypted_outputs_refuse_compression_and_preallocation()
    {
        string source = dir.Combine("s.raw");
        File.WriteAllBytes(source, new byte[1 << 20]);
        using var passphrase = ImagePassphrase.FromChars(Secret);
        var encryption = new ImageEncryption { Passphrase = passphrase, Luks = new LuksCreateOptions { IterationTime = 10 } };
        using IBlockReader reader = BlockReaders.Open(source);
        foreach (ConvertOptions options in new[]
        {
            new ConvertOptions { Format = ImageFormat.Qcow2, Compress = true, Encryption = encryption },
            new ConvertOptions { Format = ImageFormat.Qcow2, Preallocation = Preallocation.Full, Encryption = encryption },
            new ConvertOptions { Format = ImageFormat.Vmdk, Encryption = encryption },
        })
        {
            string output = dir.Combine("o." + options.Format.ToQemuName());
            var e = Assert.Throws<KvmStorageException>(() => ImageConverter.Convert(reader, output, options));
            Assert.Equal(ConvertErrorIds.InvalidConvertOptions, e.ErrorId);
            Assert.False(File.Exists(output));
        }

        Assert.Empty(Directory.GetFiles(dir.Path, ".*"));
    }

    [Fact]
    public void The_splitter_round_trips_and_loses_the_key_with_one_stripe()
    {
        byte[] key = RandomNumberGenerator.GetBytes(64);
        byte[] split = new byte[64 * 4000];
        AfSplitter.Split(HashAlgorithmName.SHA256, key, 4000, split);
        byte[] merged = new byte[64];
        AfSplitter.Merge(HashAlgorithmName.SHA256, split, 4000, merged);
        Assert.Equal(key, merged);
        split[12345] ^= 1;
        AfSplitter.Merge(HashAlgorithmName.SHA256, split, 4000, merged);
        Assert.NotEqual(key, merged);
    }

    [Fact]
    public void Xts_matches_the_IEEE_1619_vector()
    {
        // IEEE 1619-2007 XTS-AES-256, vector 10: keys e, pi digits; data unit 0xff; plaintext 00..ff twice.
        byte[] key = System.Convert.FromHexString(
            "2718281828459045235360287471352662497757247093699959574966967627" +
            "3141592653589793238462643383279502884197169399375105820974944592");
        byte[] data = new byte[512];
        for (int i = 0; i < 512; i++)
        {
            data[i] = (byte)i;
        }

        byte[] plain = (byte[])data.Clone();
        using var xts = new XtsAes(key);
        xts.Encrypt(data, 0xff);
        Assert.Equal("1C3B3A102F770386E4836C99E370CF9BEA00803F5E482357A4AE12D414A3E63B", System.Convert.ToHexString(data, 0, 32));
        xts.Decrypt(data, 0xff);
        Assert.Equal(plain, data);
    }

    private static string ImageOpts(string format, string path) =>
        format == "luks" ? $"driver=luks,file.filename={path},key-secret=s0" : $"driver=qcow2,file.filename={path},encrypt.key-secret=s0";

    private byte[] QemuPlain(string format, string image)
    {
        string plain = dir.Combine(Path.GetFileName(image) + ".plain");
        File.Delete(plain);
        ExternalTool.RunChecked("qemu-img", "convert", "--object", $"secret,id=s0,data={Secret}", "--image-opts", ImageOpts(format, image), "-O", "raw", plain);
        return File.ReadAllBytes(plain);
    }

    private static void Patch(string path, long offset, byte value)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
        stream.Position = offset;
        stream.WriteByte(value);
    }

    private static string Hash(string path) => System.Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
