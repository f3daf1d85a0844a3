// KvmStorage.Core is Linux-only (its AssemblyInfo.cs), and so is this benchmark.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
