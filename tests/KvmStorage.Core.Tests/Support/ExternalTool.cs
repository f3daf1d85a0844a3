using System.Diagnostics;
using Xunit;

namespace KvmStorage.Core.Tests.Support;

/// <summary>Runs the reference tools (qemu-img, qemu-io, virt-xml-validate, virsh) that serve as test oracles.</summary>
public static class ExternalTool
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>The full path of a tool on PATH, or null.</summary>
    public static string? Find(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        foreach (string dir in new[] { "/usr/bin", "/usr/sbin", "/bin", "/sbin" })
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>Skips the calling test, with the reason, when the oracle is not installed.</summary>
    public static string Require(string name)
    {
        string? path = Find(name);
        Skip.If(path is null, $"{name} is not installed (the test task installs it when run as root on Debian)");
        return path!;
    }

    public static Result Run(string tool, params string[] arguments)
    {
        var start = new ProcessStartInfo(Require(tool))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', arguments)} did not finish in 5 minutes");
        }

        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs a tool and fails the test unless it exits 0.</summary>
    public static string RunChecked(string tool, params string[] arguments)
    {
        Result result = Run(tool, arguments);
        Assert.True(result.ExitCode == 0, $"{tool} {string.Join(' ', arguments)} exited {result.ExitCode}: {result.Stderr}{result.Stdout}");
        return result.Stdout;
    }

    /// <summary>
    /// Runs a <c>qemu-img create</c> of a LUKS image (raw LUKS or LUKS in qcow2). qemu calibrates its PBKDF2 iteration
    /// count by timing a first batch with the thread's CPU clock, and when that batch takes less than one clock tick it
    /// gives up with "Unable to get accurate CPU usage" (qemu 7.2, crypto/pbkdf.c): on this 2-core machine about one
    /// create in five. Only that failure is retried, up to 40 times; any other failure fails the test at once.
    /// </summary>
    public static void CreateLuksFixture(string target, params string[] arguments)
    {
        const string Transient = "Unable to get accurate CPU usage";
        Result result = Run("qemu-img", arguments);
        for (int attempt = 1; result.ExitCode != 0 && result.Stderr.Contains(Transient, StringComparison.Ordinal) && attempt < 40; attempt++)
        {
            File.Delete(target);
            Thread.Sleep(20 * attempt);
            result = Run("qemu-img", arguments);
        }

        Assert.True(result.ExitCode == 0, $"qemu-img {string.Join(' ', arguments)} exited {result.ExitCode}: {result.Stderr}{result.Stdout}");
    }
}
