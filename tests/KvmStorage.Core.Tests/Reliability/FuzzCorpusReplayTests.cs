using KvmStorage.Fuzz;
using Xunit;

namespace KvmStorage.Core.Tests.Reliability;

/// <summary>
/// The short form of the fuzzing: every committed seed (fuzz/corpus/*) and every crash regression
/// (fuzz/regressions/*) through every fuzz target, in-process. A target only swallows typed errors, so any other
/// exception fails the test; a hang is caught by the per-file time bound.
/// </summary>
public sealed class FuzzCorpusReplayTests
{
    private static readonly TimeSpan PerInputLimit = TimeSpan.FromSeconds(30);

    public static TheoryData<string> Targets()
    {
        var data = new TheoryData<string>();
        foreach (string name in FuzzTargets.All.Keys)
        {
            data.Add(name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public async Task Every_corpus_and_regression_file_gives_only_typed_errors(string target)
    {
        Action<byte[]> run = FuzzTargets.All[target];
        List<string> files = InputFiles();
        Assert.NotEmpty(files);
        var failures = new List<string>();
        foreach (string file in files)
        {
            byte[] data = File.ReadAllBytes(file);
            Task task = Task.Run(() => run(data));
            if (await Task.WhenAny(task, Task.Delay(PerInputLimit)) != task)
            {
                failures.Add($"{Relative(file)}: no answer within {PerInputLimit.TotalSeconds} s");
                continue;
            }

            if (task.Exception?.InnerException is { } e)
            {
                failures.Add($"{Relative(file)}: {e.GetType().Name}: {e.Message}");
            }
        }

        Assert.True(failures.Count == 0, $"{target}: untyped failures:\n{string.Join('\n', failures)}");
    }

    [Fact]
    public void Every_target_has_a_seed_corpus()
    {
        string root = FuzzRoot();
        foreach (string name in FuzzTargets.All.Keys)
        {
            string folder = Path.Combine(root, "corpus", name);
            Assert.True(Directory.Exists(folder) && Directory.EnumerateFiles(folder).Any(), $"fuzz/corpus/{name} has no seeds");
        }
    }

    private static List<string> InputFiles()
    {
        string root = FuzzRoot();
        return [.. new[] { "corpus", "regressions" }
            .Select(d => Path.Combine(root, d))
            .Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFiles(d, "*", SearchOption.AllDirectories))
            .Where(f => !Path.GetFileName(f).StartsWith('.') && !f.EndsWith(".md", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)];
    }

    private static string Relative(string file) => Path.GetRelativePath(FuzzRoot(), file);

    private static string FuzzRoot()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "fuzz", "corpus");
            if (Directory.Exists(candidate))
            {
                return Path.Combine(d.FullName, "fuzz");
            }
        }

        throw new DirectoryNotFoundException("fuzz/corpus was not found above the test folder.");
    }
}
